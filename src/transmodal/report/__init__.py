"""Run reports: PNG plots of learning curves and alignment, and the HTML page of a run."""

from .html import reproduce_command, write_report
from .plots import plot_alignment, plot_learning_curves

__all__ = ["plot_learning_curves", "plot_alignment", "write_report", "reproduce_command"]
