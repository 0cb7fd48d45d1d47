"""Moment matching (:func:`l2`): the cheapest alignment distance, means and per-dimension
standard deviations only, as a baseline for OTDD and MMD."""
from __future__ import annotations

from torch import Tensor

from transmodal.errors import DataError

from ._utils import _check_features, _work_dtype


def l2(xs: Tensor, xt: Tensor) -> Tensor:
    """Moment matching: ||mean(xs) - mean(xt)||^2 + ||std(xs) - std(xt)||^2.

    Means and (biased) per-dimension standard deviations over the points, so the loss
    matches location and scale of every feature but ignores correlations and labels.
    The std is sqrt(var + 1e-12) so the gradient stays finite for a constant feature.
    Differentiable in both arguments.
    """
    xs, xt = _check_features(xs, "xs"), _check_features(xt, "xt")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"xs has {xs.shape[1]} features and xt has {xt.shape[1]}")
    dtype = _work_dtype(xs.dtype, xt.dtype)
    x, y = xs.to(dtype), xt.to(dtype)
    std_x = (x.var(0, unbiased=False) + 1e-12).sqrt()
    std_y = (y.var(0, unbiased=False) + 1e-12).sqrt()
    value = (x.mean(0) - y.mean(0)).pow(2).sum() + (std_x - std_y).pow(2).sum()
    return value.to(xt.dtype)
