"""Self-supervised learning for medical data with SIGReg: notebooks, library and paper

Modules:

- `sslmed.all`: Every public name of sslmed in one import: `from sslmed.all import *`."""

__version__ = "0.0.1"
