"""Running a fit: ``fit`` (end to end), the ``Run`` it returns and ``load``; the run folder,
checkpoints for exact resume, and the scikit-learn estimators."""

from .fit import fit
from .run import Run, load

__all__ = ["fit", "load", "Run"]
