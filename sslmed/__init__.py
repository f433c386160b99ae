"""Self-supervised learning for medical data with SIGReg: notebooks, library and paper"""

__version__ = "0.0.1"
