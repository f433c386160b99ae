"""Self-supervised learning for medical data with SIGReg: notebooks, library and paper

Modules:

- `sslmed.eval`: The evaluation names of the design in one module, kept importable for one release: they now live in `sslmed.features`, `.probes`, `.finetune`, `.spectra`, `.metrics`, `.selective`, `.cam` and `.mil`."""

__version__ = "0.0.1"
