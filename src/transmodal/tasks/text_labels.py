"""Class labels as text (OFA, ``--head generate``): the label -> text mapping, and the loss,
decoding and probabilities on the generate head's raw outputs (``models/heads/generate.py``:
(B, K, 4) = log P(label), token cross-entropy, smoothing term, decoded one-hot).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import weighted_mean

SCORE, TOKEN_CE, SMOOTH_CE, PICK = range(4)  # channels of the raw output


def read_label_texts(path: str) -> dict[str, str]:
    """YAML ``label: text`` (keys compared as text, so ``0: no`` matches the integer label 0)."""
    from ..config import read_yaml

    values = read_yaml(path, f"--label-texts {path} does not exist")
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"{path} must map each label to its text, e.g. '0: normal'")
    out = {}
    for label, text in values.items():
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise ConfigError(f"{path}: the text of label {label!r} must be one string")
        out[str(label)] = str(text)
    return out


def label_texts(classes: list[Any], mapping: dict[str, str] | None) -> list[str]:
    """The text of every class (the mapping's, else the label itself); one clear error for a
    mapping that misses labels or names unknown ones, an empty text, or two equal texts."""
    names = [str(c) for c in classes]
    if mapping is not None:
        missing = [n for n in names if n not in mapping]
        if missing:
            raise DataError(f"--label-texts has no text for the label(s) {missing[:5]}; give one "
                            "for every label")
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise DataError(f"--label-texts names label(s) {unknown[:5]} that the data do not have; "
                            f"the labels are {names[:20]}")
    texts = [mapping[n] if mapping is not None else n for n in names]
    for name, text in zip(names, texts):
        if not text.strip():
            raise DataError(f"the text of label {name!r} is empty; every label needs words")
    seen: dict[str, str] = {}
    for name, text in zip(names, texts):
        key = " ".join(text.split())
        if key in seen:
            raise DataError(f"labels {seen[key]!r} and {name!r} have the same text {text!r}; give "
                            "every label its own text (--label-texts)")
        seen[key] = name
    return texts


def loss(out: torch.Tensor, target: torch.Tensor, smoothing: float,
         weight: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced cross-entropy of the true label's tokens under the trie mask, with label
    smoothing over the allowed tokens; ``out`` (B, K, 4), ``target`` (B,) class ids."""
    out = out.float()
    per_label = (1.0 - smoothing) * out[..., TOKEN_CE] + smoothing * out[..., SMOOTH_CE]  # (B, K)
    per = per_label.gather(1, target[:, None]).squeeze(1)  # (B,)
    return per.mean() if weight is None else weighted_mean(per, weight)


def decode(raw: np.ndarray, classes: list[Any]) -> np.ndarray:
    """The decoded labels; an invalid free answer is None (the array is then of objects)."""
    pick = raw[..., PICK]  # (N, K) one-hot, or all zero
    labels = np.asarray(classes, dtype=object)[pick.argmax(1)]
    valid = pick.max(1) > 0
    if valid.all():
        return labels.astype(np.asarray(classes).dtype)
    labels[~valid] = None
    return labels


def probabilities(raw: np.ndarray) -> np.ndarray:
    """(N, K): P(label) under the trie-constrained decoder, normalised over the label set."""
    return torch.softmax(torch.from_numpy(raw[..., SCORE]).double(), dim=1).float().numpy()


def invalid(y_pred: np.ndarray) -> np.ndarray:
    """Which predictions are invalid free answers."""
    return np.asarray([v is None for v in np.asarray(y_pred, dtype=object).tolist()], dtype=bool)
