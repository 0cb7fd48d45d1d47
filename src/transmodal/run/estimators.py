"""scikit-learn estimators around ``fit``: usable in Pipeline, GridSearchCV and clone.

``__init__`` only stores parameters; fitted state ends in ``_`` (``run_``, ``classes_``,
``n_features_in_``). Nothing is written to disk: the fitted model lives in ``run_``. The
parameters are FitConfig's training options (one source: ``config.py``), plus ``verbose`` (a
progress bar) and, for the classifier, ``class_weight``.

They pass ``sklearn.utils.estimator_checks.check_estimator`` except the checks listed by
:func:`expected_failed_checks`, each with its reason (``tests/test_estimators.py`` runs them).
Inputs are checked the scikit-learn way (``validate_data``: sparse, complex, empty, 1-D and
wrongly shaped inputs get scikit-learn's messages); 3-D ``(N, C, L)`` and 4-D ``(N, C, H, W)``
arrays and lists of series of different lengths are taken as in ``transmodal.fit``
(``n_features_in_`` is then the channel count, what ``validate_data`` compares).
Pickling a fitted estimator keeps the model and its preprocessing, never the accelerator
(``Run.__getstate__``); the unpickled estimator predicts identically.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..config import FitConfig
from .fit import fit
from .run import Run


# every training option of FitConfig is an estimator parameter (the data-source and run-folder
# options are not: an estimator takes arrays and writes nothing), plus ``verbose``
_PARAMS: dict[str, Any] = {f.name: f.default for f in FitConfig.options("train")}
_PARAMS["verbose"] = False


def _signature(params: dict[str, Any]) -> inspect.Signature:
    """scikit-learn reads the parameter names from the signature of __init__ (get_params, clone)."""
    return inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in params.items()])


def _make_init(params: dict[str, Any]):
    def __init__(self, **given: Any) -> None:  # only stores parameters, as scikit-learn requires
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise TypeError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(params)}")
        for name, default in params.items():
            setattr(self, name, given.get(name, default))

    __init__.__signature__ = _signature(params)
    return __init__


# the checks of sklearn.utils.estimator_checks that cannot hold for this kind of model, and why
_EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "a weight of k equals k copies of a sample only in expectation: training is mini-batch "
        "AdamW with a held-out validation split, and copies change the batches, the number of "
        "steps and the validation split (the weights do reach the loss: tests/test_estimators.py)"),
}
# regressors only: a classifier's labels and probabilities pass at this tolerance
_EXPECTED_REGRESSOR_FAILURES = {
    "check_methods_subset_invariance": (
        "float32 outputs depend on the batch's size at the 1e-6 relative level (the matrix "
        "kernels sum in another order for 1 and for 20 samples); the check's atol is 1e-7 in the "
        "targets' own units, which a probe-started regression head's outputs exceed "
        "(measured: 6 of 20 values off by 1.0e-6)"),
}


# the tags that switch checks off, and why
POOR_SCORE_REASON = (
    "scikit-learn's score checks (accuracy > 0.83 on make_blobs, R2 > 0.5 on make_regression) "
    "use 2-10 tabular features: each feature becomes a token of one value, which the embedder's "
    "LayerNorm reduces nearly to its sign (measured with the test body: R2 0.09 at patch 1, "
    "0.44 at patch 5); the model is for series and images, and a check budget of 2 epochs "
    "trains no transformer")


def expected_failed_checks(estimator: Any = None) -> dict[str, str]:
    """Check name -> reason, for ``check_estimator(..., expected_failed_checks=...)`` and
    ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``. (The
    score checks are off through the ``poor_score`` tag instead: POOR_SCORE_REASON.)"""
    from sklearn.base import is_regressor

    regressor = estimator is not None and is_regressor(estimator)
    return {**_EXPECTED_FAILURES, **(_EXPECTED_REGRESSOR_FAILURES if regressor else {})}


def _ragged(X: Any) -> bool:
    """A list of series of different lengths (the variable-length rule resamples them)."""
    return (isinstance(X, (list, tuple)) and len(X) > 1
            and len({np.shape(s) for s in X}) > 1 and all(np.ndim(s) in (1, 2) for s in X))


class _TransmodalEstimator(BaseEstimator):
    _task = "auto"
    _y_params: dict[str, Any] = {}  # how validate_data checks y (check_X_y's options)
    __init__ = _make_init(_PARAMS)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, C, L) series and (N, C, H, W) images
        return tags

    def _validate(self, X: Any, y: Any = None, *, reset: bool) -> Any:
        """Checked inputs (and targets, when fitting), scikit-learn's way."""
        if _ragged(X):
            channels = {1 if np.ndim(s) == 1 else np.shape(s)[0] for s in X}
            if reset:
                self.n_features_in_ = channels.pop() if len(channels) == 1 else 0
            return (X, validate_data(self, y=y, **self._y_params)) if reset else X
        # float32 stays float32 (no copy), anything else becomes float64; at least 2 samples
        # to fit (one may go to validation); 3-D and 4-D arrays are valid inputs
        params = dict(accept_sparse=False, allow_nd=True, dtype=[np.float32, np.float64],
                      ensure_min_samples=2 if reset else 1)
        if not reset:
            return validate_data(self, X, reset=False, **params)
        return validate_data(self, X, y, **params, **self._y_params)

    def _fit_run(self, X: Any, y: Any, sample_weight: Any) -> Run:
        params = self.get_params()
        params.pop("class_weight", None)
        verbose = params.pop("verbose")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X if not _ragged(X) else np.empty(len(X)),
                                                 ensure_non_negative=True,
                                                 allow_all_zero_weights=True)  # fit says why not
        return fit((X, np.asarray(y)), task=self._task, progress=verbose,
                   sample_weight=sample_weight, **params)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "run_")
        return self.run_.predict(self._validate(X, reset=False))


class TransmodalClassifier(ClassifierMixin, _TransmodalEstimator):
    """Classifier: labels of any type; ``predict_proba`` columns follow ``classes_``.

    ``class_weight``: None, ``"balanced"`` or a dict {label: weight}; it multiplies
    ``sample_weight`` (as in scikit-learn) and so weights the training loss and the validation
    scores that choose the epoch.
    """

    _task = "classification"
    _y_params = {"multi_output": False}  # y (N, 1): a DataConversionWarning, then raveled
    __init__ = _make_init({**_PARAMS, "class_weight": None})

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # ClassifierMixin's: set after the base class's
        tags.classifier_tags.poor_score = True  # POOR_SCORE_REASON
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "TransmodalClassifier":
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)  # continuous or unknown label types: scikit-learn's error
        if self.class_weight is not None:
            from sklearn.utils.class_weight import compute_sample_weight

            by_class = compute_sample_weight(self.class_weight, y)
            sample_weight = by_class if sample_weight is None else by_class * _check_sample_weight(
                sample_weight, np.empty(len(y)), ensure_non_negative=True, allow_all_zero_weights=True)
        self.run_ = self._fit_run(X, y, sample_weight)
        self.classes_ = np.asarray(self.run_.classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "run_")
        return self.run_.predict_proba(self._validate(X, reset=False))


class TransmodalRegressor(RegressorMixin, _TransmodalEstimator):
    """Regressor: float targets (N,) or (N, k)."""

    _task = "regression"
    _y_params = {"multi_output": True, "y_numeric": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y (N, k)
        tags.regressor_tags.poor_score = True  # POOR_SCORE_REASON
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "TransmodalRegressor":
        X, y = self._validate(X, y, reset=True)
        self.run_ = self._fit_run(X, np.asarray(y, dtype=np.float64), sample_weight)
        return self
