"""The validation split: always carved from the training data, never from the test split."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def split_train_val(y: np.ndarray, task, fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices for train and validation; ``task`` (a Task) says how to stratify and how
    many validation samples it needs at least (classification: one per class)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    n_val = max(1, int(round(fraction * len(y))))
    n_val = max(n_val, task.min_validation(y))
    strat = task.stratify(y)
    if len(y) - n_val < 1:
        raise DataError(f"only {len(y)} training samples: too few to hold out a validation split")
    try:
        tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    except ValueError as e:
        raise DataError(f"cannot split a validation set: {e}") from None
    return np.sort(tr), np.sort(va)
