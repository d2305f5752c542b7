"""mrsr: reproducible MR image super-resolution (multi-resolution learning CNN)."""

__version__ = "0.1.0"
