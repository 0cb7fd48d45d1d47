"""Shared helpers of the alignment distances: input validation, the working dtype, and
squared Euclidean distances.

Every distance (OTDD and its label term, MMD, L2) checks its inputs and promotes dtypes the
same way, and OTDD's label term and MMD share one pairwise squared-distance routine; they
live here so that none of those modules imports another for them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from transmodal.errors import DataError


def _check_features(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise DataError(f"{name} must be a torch.Tensor of shape (n, d), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name} must have shape (n, d) with n, d >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"{name} must be a floating point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{name} contains NaN or inf; clean or impute the features first")
    return x


def _class_index(y: Tensor | None, n: int, name: str) -> tuple[Tensor, int]:
    """Map arbitrary integer class ids to 0..K-1: returns ((n,) int64, K)."""
    if not isinstance(y, Tensor):
        raise DataError(f"{name} must be a torch.Tensor of integer class ids (or pass "
                        f"label_cost=False), got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{name} must have shape ({n},) to match the features, got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{name} must hold integer class ids, got {y.dtype}")
    _, index = torch.unique(y, return_inverse=True)
    return index.long(), int(index.max()) + 1


def _work_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """Promoted dtype; half precisions compute in float32 (exp/eigh need the range)."""
    dt = dtypes[0]
    for other in dtypes[1:]:
        dt = torch.promote_types(dt, other)
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


def _sqdist(x: Tensor, y: Tensor) -> Tensor:
    """(N, M) squared Euclidean distances via ||x||^2 + ||y||^2 - 2 x y^T, clamped at 0."""
    d = torch.addmm((x * x).sum(1)[:, None], x, y.T, alpha=-2.0)  # (N, M)
    return (d + (y * y).sum(1)[None, :]).clamp_min(0.0)
