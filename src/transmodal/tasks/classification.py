"""Classification: labels of any type, cross-entropy on logits, accuracy picks the epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DataError
from . import register_task
from .base import Task, weighted_mean


@register_task
class Classification(Task):
    name = "classification"
    head = "pooled"
    primary = ("accuracy", True)
    infer_rank = 1  # after dense: a (N, L) integer mask is a dense target
    view = "classes"
    augment_targets = "labels"

    def __init__(self, classes: list[Any] | None = None) -> None:
        self.classes = list(classes or [])  # label values, sorted (numbers before strings)

    def matches(self, x: np.ndarray, y: np.ndarray) -> bool:
        return y.dtype.kind in "iubUSO"

    def check_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        if y.ndim != 1:
            raise DataError(f"classification needs one label per sample; y has shape {y.shape}")
        values, counts = np.unique(y, return_counts=True)
        if len(counts) < 2:
            raise DataError("classification needs at least 2 classes; y has only one")
        if counts.min() < 2:
            rare = values.tolist()[counts.argmin()]  # a Python value, also from object arrays (CSV)
            raise DataError(
                f"class {rare!r} has a single sample; each class needs at least 2 (one may go to "
                "validation). Add samples or drop the class"
            )

    def check_eval_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        self.encode(y)  # labels the model never saw: one clear error

    def stratify(self, y: np.ndarray) -> np.ndarray:
        return y

    def min_validation(self, y: np.ndarray) -> int:
        return len(np.unique(y))  # one sample of every class

    def fit_targets(self, x: np.ndarray, y: np.ndarray) -> "Classification":
        self.classes = sorted(np.unique(y).tolist(), key=_sort_key)
        return self

    def state(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Classification":
        return cls(d.get("classes", []))

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def encode(self, y: np.ndarray) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes)}
        unseen = [v for v in np.unique(y).tolist() if v not in lookup]
        if unseen:
            raise DataError(
                f"labels {unseen[:5]} were not seen in training; the model knows "
                f"{self.classes[:20]}"
            )
        return np.asarray([lookup[v] for v in y.tolist()], dtype=np.int64)

    def decode(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[raw.argmax(1)].astype(
            np.asarray(self.classes).dtype
        )

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(raw), dim=1).numpy()  # (N, K), columns = classes

    def loss(self, out: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is None:
            return F.cross_entropy(out.float(), target)
        return weighted_mean(F.cross_entropy(out.float(), target, reduction="none"), weight)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray,
              sample_weight: np.ndarray | None = None) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        w = {} if sample_weight is None else {"sample_weight": sample_weight}
        return {"accuracy": float(accuracy_score(y_true, y_pred, **w)),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro", **w))}

    def alignment_labels(self, target: np.ndarray, k: int, seed: int) -> np.ndarray:
        return target.astype(np.int64)  # the class ids themselves


def _sort_key(v: Any) -> tuple:
    """Sort numbers numerically and strings alphabetically, never comparing the two."""
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
