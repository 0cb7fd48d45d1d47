"""Classification: labels of any type, cross-entropy on logits, accuracy picks the epoch.

With ``--head generate`` the labels are text a decoder writes (``text_labels.py``): the loss,
decoding and probabilities then read the generate head's outputs instead of logits."""

from __future__ import annotations

import warnings
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
    # series longer than the token cap: MiniRocket-style features per patch beside the patch
    # tokens (fit's defaults, 3 seeds: ArrowHead 0.808 vs 0.594, GunPoint 0.960 vs 0.933,
    # OSULeaf seed 0 0.950 vs 0.686; README "Small data")
    series_embedder = "rocket"

    def __init__(self, classes: list[Any] | None = None, text: dict[str, Any] | None = None) -> None:
        self.classes = list(classes or [])  # label values, sorted (numbers before strings)
        # --head generate: {mapping (label -> text, or None), texts (per class, once fitted),
        # label_smoothing, decode, text_body}; None: the linear head
        self.generate_text = text
        if text is not None:
            self.head = "generate"

    def check_head(self, head: str) -> None:
        if head not in ("linear", "generate"):
            super().check_head(head)

    def configure(self, cfg: Any) -> None:
        if cfg.head != "generate":
            return
        from .text_labels import read_label_texts

        mapping = read_label_texts(cfg.label_texts) if cfg.label_texts else None
        self.generate_text = {"mapping": mapping, "texts": [], "label_smoothing": float(cfg.label_smoothing),
                     "decode": cfg.decode, "text_body": cfg.text_body}
        self.head = "generate"

    def spec_extras(self) -> dict[str, Any]:
        if self.generate_text is None:
            return {}
        return {"head": "generate", "generate": {"text_body": self.generate_text["text_body"],
                                                 "labels": list(self.generate_text["texts"]),
                                                 "decode": self.generate_text["decode"]}}

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
        if self.generate_text is not None:
            from .text_labels import label_texts

            label_texts(sorted(values.tolist(), key=_sort_key), self.generate_text["mapping"])

    def check_eval_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        self.encode(y)  # labels the model never saw: one clear error

    def stratify(self, y: np.ndarray) -> np.ndarray:
        return y

    def min_validation(self, y: np.ndarray) -> int:
        return len(np.unique(y))  # one sample of every class

    def fit_targets(self, x: np.ndarray, y: np.ndarray) -> "Classification":
        self.classes = sorted(np.unique(y).tolist(), key=_sort_key)
        if self.generate_text is not None:
            from .text_labels import label_texts

            self.generate_text["texts"] = label_texts(self.classes, self.generate_text["mapping"])
        return self

    def state(self) -> dict[str, Any]:
        if self.generate_text is None:
            return {"classes": list(self.classes)}
        return {"classes": list(self.classes), "head": "generate",
                "label_texts": list(self.generate_text["texts"]),
                "label_smoothing": self.generate_text["label_smoothing"],
                "decode": self.generate_text["decode"],
                "text_body": self.generate_text["text_body"]}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Classification":
        if d.get("head") != "generate":
            return cls(d.get("classes", []))
        classes = d.get("classes", [])
        texts = list(d["label_texts"])
        return cls(classes, {"mapping": {str(c): t for c, t in zip(classes, texts)}, "texts": texts,
                             "label_smoothing": float(d["label_smoothing"]),
                             "decode": d["decode"], "text_body": d["text_body"]})

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
        if self.generate_text is not None:
            from .text_labels import decode

            return decode(raw, self.classes)
        return np.asarray(self.classes, dtype=object)[raw.argmax(1)].astype(
            np.asarray(self.classes).dtype
        )

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        if self.generate_text is not None:
            from .text_labels import probabilities

            return probabilities(raw)
        return torch.softmax(torch.from_numpy(raw), dim=1).numpy()  # (N, K), columns = classes

    def mix(self, outputs: list[np.ndarray], weights: list[float]) -> np.ndarray:
        """The weighted mean of the members' probabilities, as log-probabilities (a raw output
        whose softmax is that mean): averaging probabilities, not logits, is what ensembles of
        differently calibrated members (a transformer and a ridge baseline) need."""
        p = sum(w * self.probabilities(o).astype(np.float64) for w, o in zip(weights, outputs))
        return np.log(np.clip(p, 1e-12, None)).astype(np.float32)  # (N, K)

    def loss(self, out: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.generate_text is not None:
            from .text_labels import loss

            return loss(out, target, self.generate_text["label_smoothing"], weight)
        if weight is None:
            return F.cross_entropy(out.float(), target)
        return weighted_mean(F.cross_entropy(out.float(), target, reduction="none"), weight)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray,
              sample_weight: np.ndarray | None = None) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        w = {} if sample_weight is None else {"sample_weight": sample_weight}
        if self.generate_text is None:
            return {"accuracy": float(accuracy_score(y_true, y_pred, **w)),
                    "macro_f1": float(f1_score(y_true, y_pred, average="macro", **w))}
        from .text_labels import invalid

        bad = invalid(y_pred)  # free answers that are no label: wrong, and counted
        f1 = dict(w)
        if bad.any():  # compared as text; the F1 average is over the real classes only
            y_true = np.asarray([str(v) for v in np.asarray(y_true).tolist()])
            y_pred = np.asarray(["\0invalid" if b else str(v)
                                 for v, b in zip(np.asarray(y_pred, dtype=object).tolist(), bad)])
            f1["labels"] = np.unique(np.concatenate([y_true, y_pred[~bad]]))
        return {"accuracy": float(accuracy_score(y_true, y_pred, **w)),
                "macro_f1": float(f1_score(y_true, y_pred, average="macro", **f1)),
                "invalid_rate": float(np.average(bad, weights=sample_weight))}

    def probe(self, feats: np.ndarray, y: np.ndarray, weight: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """Multinomial logistic regression; its C by log-loss in stratified inner folds of the
        training split (log loss, not accuracy: the head starts calibrated, not saturated)."""
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        present = np.unique(y)
        if self.generate_text is not None or len(present) < 2:
            return None
        folds = min(PROBE_FOLDS, int(np.bincount(y)[present].min()))
        if folds >= 2:
            clf = LogisticRegressionCV(Cs=PROBE_CS, cv=StratifiedKFold(folds),
                                       scoring="neg_log_loss", max_iter=2000)
        else:  # a class with one sample: no inner folds
            clf = LogisticRegression(C=1.0, max_iter=2000)
        with warnings.catch_warnings():  # scikit-learn 1.9 announces a change of C_'s layout
            warnings.simplefilter("ignore", FutureWarning)
            clf.fit(feats, y, sample_weight=weight)
        k, f = self.n_outputs, feats.shape[1]
        coef, intercept = np.zeros((k, f)), np.full(k, clf.intercept_.min() - 10.0)
        if len(present) == 2:  # sklearn's one binary row as two logits: ±half of it
            coef[present] = np.stack([-clf.coef_[0], clf.coef_[0]]) / 2
            intercept[present] = np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
        else:
            coef[present], intercept[present] = clf.coef_, clf.intercept_
        c = float(np.atleast_1d(clf.C_)[0]) if folds >= 2 else 1.0
        return coef, intercept, f"logistic regression, C={c:g}"

    def alignment_labels(self, target: np.ndarray, k: int, seed: int) -> np.ndarray:
        return target.astype(np.int64)  # the class ids themselves


# the probe's inverse regularisation grid and inner folds (engine/probe.py)
PROBE_CS = np.logspace(-4, 2, 7).tolist()
PROBE_FOLDS = 3


def _sort_key(v: Any) -> tuple:
    """Sort numbers numerically and strings alphabetically, never comparing the two."""
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
