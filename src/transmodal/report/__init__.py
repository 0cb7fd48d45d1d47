"""Run reports: PNG plots of learning curves and alignment."""

from .plots import plot_alignment, plot_learning_curves

__all__ = ["plot_learning_curves", "plot_alignment"]
