"""Stage 1 "align": distances between the embedded target data and the source reference."""
from .distances import MMDSource, OTDDSource, l2, mmd, otdd

__all__ = ["otdd", "mmd", "l2", "OTDDSource", "MMDSource"]
