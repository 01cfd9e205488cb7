"""corral: one runtime for every model, local or remote."""

__version__ = "0.1.0"
