"""Hyper-parameter search of fit options with Optuna (``transmodal search``)."""

from .space import DEFAULT_SPACE
from .storage import StorageError
from .study import search

__all__ = ["search", "DEFAULT_SPACE", "StorageError"]
