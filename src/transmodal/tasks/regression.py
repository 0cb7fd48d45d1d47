"""Regression: one or more numbers per sample, MSE on standardised targets, RMSE picks the epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError
from . import register_task
from .base import Task, mse


@register_task
class Regression(Task):
    name = "regression"
    head = "pooled"
    primary = ("rmse", False)
    infer_rank = 2  # float labels that are not shaped like the input grid

    def __init__(self, y_mean: list[float] | None = None, y_std: list[float] | None = None,
                 y_shape: list[int] | None = None) -> None:
        self.y_mean = list(y_mean or [])  # per output
        self.y_std = list(y_std or [])
        self.y_shape = list(y_shape or [])  # per-sample target shape: [] for (N,), [k] for (N, k)

    def matches(self, x: np.ndarray, y: np.ndarray) -> bool:
        return y.dtype.kind == "f"

    def check_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        if y.dtype.kind not in "fiu" or y.ndim > 2:
            raise DataError("regression needs numeric targets shaped (N,) or (N, k)")

    def check_eval_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        if y.dtype.kind not in "fiu":
            example = next(iter(y.ravel().tolist()), None)
            raise DataError(
                f"this regression model predicts numbers, but the labels are not numeric (e.g. "
                f"{example!r}); evaluate it on numeric targets (for class labels fit a run with "
                "--task classification)"
            )
        if int(np.prod(y.shape[1:])) != self.n_outputs:
            raise DataError(f"targets have shape {tuple(y.shape[1:])} per sample; this model "
                            f"predicts {self.n_outputs} value(s) per sample")

    def fit_targets(self, x: np.ndarray, y: np.ndarray) -> "Regression":
        yf = y.astype(np.float64)
        self.y_shape = list(y.shape[1:])
        flat = yf.reshape(len(yf), -1)  # (N, k)
        self.y_mean = flat.mean(0).tolist()
        self.y_std = np.where(flat.std(0) > 1e-8, flat.std(0), 1.0).tolist()
        return self

    def state(self) -> dict[str, Any]:
        return {"y_mean": self.y_mean, "y_std": self.y_std, "y_shape": self.y_shape}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Regression":
        return cls(d.get("y_mean"), d.get("y_std"), d.get("y_shape"))

    @property
    def n_outputs(self) -> int:
        return int(np.prod(self.y_shape)) if self.y_shape else 1

    def encode(self, y: np.ndarray) -> np.ndarray:
        flat = y.astype(np.float64).reshape(len(y), self.n_outputs)  # (N, k); N may be 0
        return ((flat - self.y_mean) / np.asarray(self.y_std)).astype(np.float32)

    def decode(self, raw: np.ndarray) -> np.ndarray:
        y = raw * np.asarray(self.y_std) + np.asarray(self.y_mean)
        return y.reshape((len(y), *self.y_shape))

    def loss(self, out: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        return mse(out, target, weight)

    def probe(self, feats: np.ndarray, y: np.ndarray, weight: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """Ridge regression on the standardised targets; its alpha by efficient leave-one-out
        (scikit-learn's RidgeCV) on the training split."""
        from sklearn.linear_model import RidgeCV

        ridge = RidgeCV(alphas=PROBE_ALPHAS).fit(feats, y.reshape(len(y), -1), sample_weight=weight)
        coef = np.atleast_2d(ridge.coef_)  # (K, F)
        return coef, np.atleast_1d(ridge.intercept_), f"ridge, alpha={float(ridge.alpha_):g}"

    def score(self, y_true: np.ndarray, y_pred: np.ndarray,
              sample_weight: np.ndarray | None = None) -> dict[str, float]:
        """RMSE over all outputs; R² per output, averaged (sklearn's "uniform_average")."""
        t = np.asarray(y_true).reshape(len(y_true), -1).astype(np.float64)
        p = np.asarray(y_pred).reshape(len(y_pred), -1).astype(np.float64)
        if sample_weight is not None:
            from sklearn.metrics import r2_score

            w = np.asarray(sample_weight, dtype=np.float64)
            rmse = float(np.sqrt(np.average(((t - p) ** 2).mean(1), weights=w)))
            return {"rmse": rmse, "r2": float(r2_score(t, p, sample_weight=w))}
        rmse = float(np.sqrt(np.mean((t - p) ** 2)))
        ss_res = ((t - p) ** 2).sum(0)
        ss_tot = ((t - t.mean(0)) ** 2).sum(0)
        r2 = float(np.mean(1.0 - ss_res / np.maximum(ss_tot, 1e-12)))
        return {"rmse": rmse, "r2": r2}


PROBE_ALPHAS = np.logspace(-2, 4, 7).tolist()  # the head's warm start (engine/probe.py)


def class_code_note(y: np.ndarray, most: int = 20) -> str | None:
    """A note for float labels that are all whole numbers with few distinct values (1.0, 2.0,
    3.0): often class codes saved as floats. ``--task auto`` still reads floats as regression
    (changing that would change results); ``fit`` shows this note instead. None otherwise."""
    if y.dtype.kind != "f" or y.ndim != 1:
        return None
    values = np.unique(y)
    if not (2 <= len(values) <= min(most, len(y) // 2) and np.all(values == np.round(values))):
        return None
    shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
    return (f"the labels are floats with {len(values)} whole values ({shown}), so --task auto "
            "chose regression; if they are class codes, pass --task classification")
