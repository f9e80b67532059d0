"""kpx: a regional exchange for Kimberley Process rough-diamond certificates."""

__version__ = "0.1.0"
