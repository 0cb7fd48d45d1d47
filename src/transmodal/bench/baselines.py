"""Strong non-deep baselines that every transmodal result is set against.

A borrowed transformer has "helped" only if it beats what a few seconds of classical fitting
achieve on the same split. Three baselines, each a small class with ``fit``/``predict``:

- ``minirocket``: aeon's MiniRocket transform (Dempster, Schmidt & Webb 2021) + a ridge
  classifier / regressor with ``alphas=np.logspace(-3, 3, 10)``. The ROCKET papers fitted
  ``RidgeClassifierCV(normalize=True)``: features centred and scaled to unit l2 norm. scikit-learn
  removed ``normalize``; ``_UnitNorm`` below reproduces it exactly, so the alpha grid means what
  it meant in the papers. Not defined for dense tasks (skipped, with the reason).
- ``linear``: logistic regression (classification) or ``RidgeCV`` (regression, dense:
  multi-output on flattened targets) on the flattened, standardised raw input.
- ``1nn``: 1-nearest-neighbour, Euclidean on the flattened raw input; for dense tasks the
  prediction is the neighbour's whole target field.

Inputs are (N, C, L) series or (N, C, H, W) grids; what a method needs flat is flattened.
``run_baselines`` fits all three and reports scores, wall times and peak memory.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from transmodal.bench.cost import PeakMemory, Timer
from transmodal.errors import ConfigError, DataError
from transmodal.tasks import score as score_task

__all__ = [
    "TASKS",
    "MINIROCKET_MIN_LENGTH",
    "MiniRocketBaseline",
    "LinearBaseline",
    "NearestNeighbourBaseline",
    "BASELINES",
    "make_baseline",
    "fit_predict",
    "run_baselines",
]

TASKS = ("classification", "regression", "dense")
MINIROCKET_MIN_LENGTH = 9  # MiniRocket's kernels have length 9
RIDGE_ALPHAS = np.logspace(-3, 3, 10)  # the grid of the ROCKET / MiniRocket papers


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")


def _check_x(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise DataError(f"{name} must have shape (N, C, L) or (N, C, H, W), got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{name} has no samples")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name} must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} contains NaN or inf; impute or drop those samples first")
    return x


def _check_y(y: Any, n: int, task: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape[:1] != (n,):
        raise DataError(f"y_train has {y.shape[:1]} rows but x_train has {n} samples")
    if task == "classification":
        if y.ndim != 1:
            raise DataError(f"classification labels must be 1-D, got shape {y.shape}")
        if np.unique(y).size < 2:
            raise DataError("classification needs at least two classes in y_train")
    else:
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
            raise DataError(f"{task} targets must be finite numbers")
        if task == "regression" and y.ndim > 2:
            raise DataError(f"regression targets must be (N,) or (N, K), got {y.shape}")
        if task == "dense" and y.ndim < 2:
            raise DataError(f"dense targets must have a grid axis, got shape {y.shape}")
    return y


def _check_test(x_test: Any, x_train: np.ndarray) -> np.ndarray:
    x_test = _check_x(x_test, "x_test")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(
            f"x_test samples have shape {x_test.shape[1:]}, x_train samples {x_train.shape[1:]}"
        )
    return x_test


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1).astype(np.float64)  # (N, C*L) or (N, C*H*W)


class _UnitNorm(BaseEstimator, TransformerMixin):
    """Centre each feature and scale it to unit l2 norm over the training set.

    This is what ``Ridge*CV(normalize=True)`` did (scikit-learn < 1.2) and what the ROCKET and
    MiniRocket papers used; a zero-norm column is left at scale 1, as sklearn did.
    """

    def fit(self, x: np.ndarray, y: Any = None) -> _UnitNorm:
        self.mean_ = x.mean(axis=0)
        norm = np.linalg.norm(x - self.mean_, axis=0)
        self.scale_ = np.where(norm > 0, norm, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_


class MiniRocketBaseline:
    """aeon MiniRocket features + ridge (classifier for labels, RidgeCV for regression).

    Series shorter than 9 points are zero-padded at the end to length 9 (aeon's own advice;
    ``pad_short=False`` raises instead). Grids (N, C, H, W) are read as (N, C, H*W) series in
    row-major order, which is only a fallback: MiniRocket is a 1-D method.
    """

    name = "minirocket"

    def __init__(
        self,
        n_kernels: int = 10_000,
        random_state: int = 0,
        pad_short: bool = True,
        n_jobs: int = 1,
    ) -> None:
        self.n_kernels = n_kernels
        self.random_state = random_state
        self.pad_short = pad_short
        self.n_jobs = n_jobs

    @staticmethod
    def skip_reason(task: str) -> str | None:
        """Why this baseline does not apply to ``task`` (None when it does)."""
        if task == "dense":
            return (
                "MiniRocket pools each kernel over the whole series into one feature, so it "
                "has no per-position output for a dense target"
            )
        return None

    def _series(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float32)  # (N, C, L)
        length = x.shape[-1]
        if length < MINIROCKET_MIN_LENGTH:
            if not self.pad_short:
                raise DataError(
                    f"MiniRocket needs series of length >= {MINIROCKET_MIN_LENGTH}, got "
                    f"{length}; pad them or use pad_short=True"
                )
            pad = MINIROCKET_MIN_LENGTH - length
            x = np.pad(x, ((0, 0), (0, 0), (0, pad)))  # zeros at the end
        return x

    def fit(self, x: np.ndarray, y: np.ndarray, task: str) -> MiniRocketBaseline:
        _check_task(task)
        reason = self.skip_reason(task)
        if reason is not None:
            raise ConfigError(f"MiniRocket does not apply to {task} tasks: {reason}")
        _keep_numba_off_openmp()
        # Imported here: aeon takes seconds to import and is only needed by this baseline.
        from aeon.transformations.collection.convolution_based import MiniRocket

        self.task_ = task
        self.transform_ = MiniRocket(
            n_kernels=self.n_kernels, random_state=self.random_state, n_jobs=self.n_jobs
        )
        features = self.transform_.fit_transform(self._series(x))  # (N, ~n_kernels)
        head = RidgeClassifierCV(alphas=RIDGE_ALPHAS) if task == "classification" else (
            RidgeCV(alphas=RIDGE_ALPHAS)
        )
        self.head_ = make_pipeline(_UnitNorm(), head).fit(features, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.head_.predict(self.transform_.transform(self._series(x)))


def _keep_numba_off_openmp() -> None:
    """Run numba's parallel kernels (MiniRocket) on numba's own thread pool, not OpenMP.

    Why: on numba's "omp" layer MiniRocket shares the OpenMP runtime with torch, and any later
    ``torch.set_num_threads`` in the same process left torch training ~15x slower (measured:
    GunPoint refine 72 s instead of 5 s, 2 cores). The "workqueue" layer has no such coupling.
    A layer the user chose (``NUMBA_THREADING_LAYER``) is kept.
    """
    if "NUMBA_THREADING_LAYER" in os.environ:
        return
    import numba

    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"


class LinearBaseline:
    """Logistic regression (classification) or RidgeCV (regression, dense), standardised input."""

    name = "linear"

    def __init__(self, max_iter: int = 5000) -> None:
        self.max_iter = max_iter

    @staticmethod
    def skip_reason(task: str) -> str | None:
        return None

    def fit(self, x: np.ndarray, y: np.ndarray, task: str) -> LinearBaseline:
        _check_task(task)
        self.task_ = task
        if task == "classification":
            head: Any = LogisticRegression(max_iter=self.max_iter)
            target = y
        else:
            head = RidgeCV(alphas=RIDGE_ALPHAS)  # multi-output for dense: one shared alpha
            target = y.reshape(y.shape[0], -1) if task == "dense" else y
        self.target_shape_ = y.shape[1:]
        self.model_: Pipeline = make_pipeline(StandardScaler(), head).fit(_flat(x), target)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        pred = self.model_.predict(_flat(x))
        if self.task_ == "dense":
            pred = pred.reshape((x.shape[0],) + self.target_shape_)
        return pred


class NearestNeighbourBaseline:
    """1-NN, Euclidean on the flattened raw input (UCR series come z-normalised already)."""

    name = "1nn"

    @staticmethod
    def skip_reason(task: str) -> str | None:
        return None

    def fit(self, x: np.ndarray, y: np.ndarray, task: str) -> NearestNeighbourBaseline:
        _check_task(task)
        self.task_ = task
        self.target_shape_ = y.shape[1:]
        if task == "classification":
            self.model_: Any = KNeighborsClassifier(n_neighbors=1).fit(_flat(x), y)
        else:
            target = y.reshape(y.shape[0], -1) if task == "dense" else y
            self.model_ = KNeighborsRegressor(n_neighbors=1).fit(_flat(x), target)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        pred = self.model_.predict(_flat(x))
        if self.task_ == "dense":
            pred = pred.reshape((x.shape[0],) + self.target_shape_)
        return pred


BASELINES = {
    "minirocket": MiniRocketBaseline,
    "linear": LinearBaseline,
    "1nn": NearestNeighbourBaseline,
}


def make_baseline(name: str, seed: int = 0) -> Any:
    """A fresh baseline by name (``minirocket``, ``linear`` or ``1nn``)."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    if name == "minirocket":
        return MiniRocketBaseline(random_state=seed)
    return BASELINES[name]()


def fit_predict(
    name: str, x_train: Any, y_train: Any, x_test: Any, task: str, seed: int = 0
) -> np.ndarray | None:
    """Fit baseline ``name`` and predict ``x_test``; None when it does not apply to ``task``."""
    _check_task(task)
    baseline = make_baseline(name, seed)
    if baseline.skip_reason(task) is not None:
        return None
    x_train = _check_x(x_train, "x_train")
    y_train = _check_y(y_train, x_train.shape[0], task)
    x_test = _check_test(x_test, x_train)
    return baseline.fit(x_train, y_train, task).predict(x_test)


def run_baselines(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    task: str,
    seed: int = 0,
    names: tuple[str, ...] = ("minirocket", "linear", "1nn"),
) -> list[dict[str, Any]]:
    """Fit and score each baseline; one dict per baseline.

    Keys: ``name``, ``task``, the task's scores (``transmodal.tasks.score``), ``train_time_s``,
    ``predict_time_s``, and, where /proc exists, ``peak_rss_mb`` (process peak during fit +
    predict) and ``rss_increase_mb`` (that peak minus the RSS at the start: what the baseline
    added; memory an earlier baseline freed but the allocator kept is reused without growing
    RSS, so this can read ~0 after a larger baseline). A baseline that does not apply has only
    ``name``, ``task`` and ``skipped`` (why).
    """
    _check_task(task)
    x_train = _check_x(x_train, "x_train")
    y_train = _check_y(y_train, x_train.shape[0], task)
    x_test = _check_test(x_test, x_train)
    y_test = np.asarray(y_test)
    if y_test.shape[:1] != (x_test.shape[0],):
        raise DataError(f"y_test has {y_test.shape[:1]} rows but x_test has {x_test.shape[0]}")

    rows: list[dict[str, Any]] = []
    for name in names:
        baseline = make_baseline(name, seed)
        reason = baseline.skip_reason(task)
        if reason is not None:
            rows.append({"name": name, "task": task, "skipped": reason})
            continue
        with PeakMemory() as mem:
            with Timer() as t_fit:
                baseline.fit(x_train, y_train, task)
            with Timer() as t_pred:
                pred = baseline.predict(x_test)
        if pred.shape != y_test.shape:
            raise DataError(f"predictions {pred.shape} and targets {y_test.shape} differ in shape")
        row: dict[str, Any] = {"name": name, "task": task, **score_task(task, y_test, pred)}
        row["train_time_s"] = t_fit.elapsed_s
        row["predict_time_s"] = t_pred.elapsed_s
        if mem.peak_rss_bytes is not None and mem.delta_rss_bytes is not None:
            row["peak_rss_mb"] = mem.peak_rss_bytes / 2**20
            row["rss_increase_mb"] = mem.delta_rss_bytes / 2**20
        rows.append(row)
    return rows
