"""scikit-learn estimators around ``fit``: usable in Pipeline, GridSearchCV and clone.

``__init__`` only stores parameters; fitted state ends in ``_`` (``run_``, ``classes_``).
Nothing is written to disk: the fitted model lives in ``run_``. The parameters are FitConfig's
training options (one source: ``config.py``), plus ``verbose`` (a progress bar).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ..config import FitConfig
from .fit import fit
from .run import Run


# every training option of FitConfig is an estimator parameter (the data-source and run-folder
# options are not: an estimator takes arrays and writes nothing), plus ``verbose``
_PARAMS: dict[str, Any] = {f.name: f.default for f in FitConfig.options("train")}
_PARAMS["verbose"] = False


def _init(self, **params: Any) -> None:
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise TypeError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(_PARAMS)}")
    for name, default in _PARAMS.items():
        setattr(self, name, params.get(name, default))


# scikit-learn reads the parameter names from the signature of __init__ (get_params, clone)
_init.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in _PARAMS.items()])


class _TransmodalEstimator(BaseEstimator):
    _task = "auto"
    __init__ = _init  # only stores parameters, as scikit-learn requires

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
