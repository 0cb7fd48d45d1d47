"""Input arrays: shape rules, the variable-length rule, and the checks every source shares.

Inputs are ``(N, L)``, ``(N, C, L)`` or ``(N, C, H, W)``. Variable-length series (a list of
``(L_i,)`` or ``(C, L_i)`` arrays) are **resampled** by linear interpolation to the longest
training length; the same rule is applied at predict time (see :func:`resample_to`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import DataError


def as_inputs(x: Any, target_length: int | None) -> tuple[np.ndarray, list[int] | None]:
    """Return float32 (N, C, *spatial) and the original lengths if x was variable-length.

    A ragged list of series is resampled to ``target_length`` (default: the longest series).
    """
    if isinstance(x, (list, tuple)) and len(x) > 0 and _is_ragged(x):
        series = [np.asarray(s, dtype=np.float64) for s in x]
        series = [s[None, :] if s.ndim == 1 else s for s in series]
        if any(s.ndim != 2 for s in series):
            raise DataError("variable-length input: each series must be (L,) or (C, L)")
        if len({s.shape[0] for s in series}) != 1:
            raise DataError("variable-length input: all series must have the same channel count")
        lengths = [s.shape[1] for s in series]
        if min(lengths) < 2:
            raise DataError("variable-length input: every series needs at least 2 time steps")
        target = target_length or max(lengths)
        arr = np.stack([resample_to(s, target) for s in series]).astype(np.float32)
        return arr, lengths
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"x must be numeric ({e})") from None
    if arr.ndim == 2:
        arr = arr[:, None, :]  # (N, L) -> (N, 1, L)
    if arr.ndim not in (3, 4):
        raise DataError(
            f"x has shape {arr.shape}; expected (N, L), (N, C, L) or (N, C, H, W)"
        )
    if 0 in arr.shape[2:]:  # torch's convolution would fail later with "padded input size (0)"
        raise DataError(f"x has shape {arr.shape}: every sample is empty (no values along one "
                        "axis); give each sample at least one value per channel")
    if target_length is not None and arr.ndim == 3 and arr.shape[-1] != target_length:
        arr = np.stack([resample_to(s, target_length) for s in arr]).astype(np.float32)
    return arr, None


def _is_ragged(x: Sequence) -> bool:
    shapes = {np.shape(s) for s in x}
    return len(shapes) > 1


def resample_to(series: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of a (C, L) series onto ``length`` evenly spaced points."""
    c, n = series.shape
    if n == length:
        return series
    old = np.linspace(0.0, 1.0, n)
    new = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(new, old, series[i]) for i in range(c)])


def check_xy(x: np.ndarray, y: np.ndarray | None) -> None:
    """Shape, length and finiteness checks with one clear message each (``y`` None: a set with
    captions and no labels, checked by :func:`as_texts`)."""
    if x.shape[0] == 0:
        raise DataError("x has zero samples; give at least a few labelled samples")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"x contains NaN or inf (first at sample {bad[0]}); fill or drop those values first"
        )
    if y is None:
        return
    if y.ndim == 0:
        raise DataError("y must have one label per sample, got a scalar")
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} samples but y has {len(y)}; they must match")
    check_labels(y)


def check_labels(y: np.ndarray) -> None:
    """Labels with no NaN, inf or missing values (one clear message each)."""
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        bad = np.argwhere(~np.isfinite(y))[0]
        raise DataError(f"y contains NaN or inf (first at sample {bad[0]}); drop those samples")
    if y.dtype.kind == "O":
        if any(v is None or (isinstance(v, float) and not np.isfinite(v)) for v in y.ravel()):
            raise DataError("y contains missing labels (None/NaN); drop those samples")


def as_texts(values: Any, n: int, where: str) -> np.ndarray:
    """One caption per sample as a str array (N,): every cell a non-blank text. Empty,
    whitespace-only and missing (None/NaN, as pandas reads an empty CSV cell) cells are refused,
    since a sample without words has nothing for the text tower to match."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{where} must hold one text per sample; it has shape {arr.shape}")
    if len(arr) != n:
        raise DataError(f"{where} has {len(arr)} texts but x has {n} samples; give one caption "
                        "per sample")
    for i, v in enumerate(arr.tolist()):
        if not isinstance(v, str):
            what = "missing (NaN/None)" if v is None or (isinstance(v, float) and v != v) else f"not a text ({v!r})"
            raise DataError(f"{where}: the caption of sample {i} is {what}; every sample needs "
                            "words: fill or drop it")
        if not v.strip():
            raise DataError(f"{where}: the caption of sample {i} is empty; every sample needs "
                            "words: fill or drop it")
    return arr.astype(str)
