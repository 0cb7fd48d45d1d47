"""Scores per task, and which one picks the best epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DataError

# task -> (metric that chooses the best epoch, True if higher is better)
PRIMARY = {"classification": ("accuracy", True), "regression": ("rmse", False), "dense": ("rel_l2", False)}


def rel_l2(pred: Any, true: Any) -> float:
    """Mean over samples of ||pred - true|| / ||true|| (each sample flattened): the dense score.

    The usual PDE-surrogate error. Takes numpy arrays or anything ``np.asarray`` takes; the
    first axis indexes samples.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise DataError(f"prediction shape {p.shape} does not match target shape {t.shape}")
    if p.ndim < 1 or p.shape[0] == 0:
        raise DataError("rel_l2 needs at least one sample")
    p = p.reshape(p.shape[0], -1)
    t = t.reshape(t.shape[0], -1)
    norms = np.linalg.norm(t, axis=1)
    if np.any(norms == 0):
        raise DataError("rel_l2 is undefined for a target that is identically zero")
    return float(np.mean(np.linalg.norm(p - t, axis=1) / norms))


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """y_pred in label space (classes or physical units), same shape as y_true."""
    if task == "classification":
        from sklearn.metrics import accuracy_score, f1_score

        return {"accuracy": float(accuracy_score(y_true, y_pred)),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro"))}
    if task == "regression":
        t = y_true.reshape(len(y_true), -1).astype(np.float64)
        p = y_pred.reshape(len(y_pred), -1).astype(np.float64)
        rmse = float(np.sqrt(np.mean((t - p) ** 2)))
        ss_res = ((t - p) ** 2).sum(0)
        ss_tot = ((t - t.mean(0)) ** 2).sum(0)
        r2 = float(np.mean(1.0 - ss_res / np.maximum(ss_tot, 1e-12)))
        return {"rmse": rmse, "r2": r2}
    return {"rel_l2": rel_l2(y_pred, y_true)}


def is_better(task: str, new: dict[str, float], best: dict[str, float] | None) -> bool:
    """Primary metric first; on a tie, lower validation loss (tiny validation sets tie often)."""
    if best is None:
        return True
    name, higher = PRIMARY[task]
    a, b = new[name], best[name]
    if a != b:
        return a > b if higher else a < b
    return new.get("loss", np.inf) < best.get("loss", np.inf)
