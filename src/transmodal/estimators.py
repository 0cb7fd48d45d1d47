"""scikit-learn estimators around ``fit``: usable in Pipeline, GridSearchCV and clone.

``__init__`` only stores parameters; fitted state ends in ``_`` (``run_``, ``classes_``).
Nothing is written to disk: the fitted model lives in ``run_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .run import Run, fit


class _TransmodalEstimator(BaseEstimator):
    _task = "auto"

    def __init__(self, body: str = "minilm", align: str = "none", tune: str = "full",
                 epochs: int = 60, align_epochs: int | None = None, batch_size: int = 16,
                 lr: float = 1e-4, head_lr: float = 1e-3, max_tokens: int = 64,
                 patience: int = 30, val_fraction: float = 0.2, seed: int = 0,
                 device: str = "auto", verbose: bool = False) -> None:
        self.body = body
        self.align = align
        self.tune = tune
        self.epochs = epochs
        self.align_epochs = align_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.max_tokens = max_tokens
        self.patience = patience
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def _fit(self, X: Any, y: Any) -> Run:
        params = self.get_params()
        verbose = params.pop("verbose")
        return fit((X, np.asarray(y)), task=self._task, progress=verbose, **params)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "run_")
        return self.run_.predict(X)


class TransmodalClassifier(ClassifierMixin, _TransmodalEstimator):
    """Classifier: labels of any type; ``predict_proba`` columns follow ``classes_``."""

    _task = "classification"

    def fit(self, X: Any, y: Any) -> "TransmodalClassifier":
        self.run_ = self._fit(X, y)
        self.classes_ = np.asarray(self.run_.classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "run_")
        return self.run_.predict_proba(X)


class TransmodalRegressor(RegressorMixin, _TransmodalEstimator):
    """Regressor: float targets (N,) or (N, k)."""

    _task = "regression"

    def fit(self, X: Any, y: Any) -> "TransmodalRegressor":
        self.run_ = self._fit(X, np.asarray(y, dtype=np.float64))
        return self
