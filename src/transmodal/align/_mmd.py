"""Squared maximum mean discrepancy with a multi-bandwidth Gaussian kernel.

:func:`mmd` for two point sets, :class:`MMDSource` for many target batches against one fixed
source (bandwidths and the source-source term computed once), and the median heuristic
that picks the bandwidths.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from transmodal.errors import ConfigError, DataError

from ._utils import _check_features, _sqdist, _work_dtype


MMD_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
_MEDIAN_MAX_POINTS = 1024  # the median heuristic looks at most at this many pooled points


def _median_sqdist(xs: Tensor, xt: Tensor) -> float:
    """Median pairwise squared distance of the pooled points (an even subsample if large)."""
    pooled = torch.cat([xs.detach(), xt.detach()]).to(torch.float64)
    if pooled.shape[0] > _MEDIAN_MAX_POINTS:
        idx = torch.linspace(0, pooled.shape[0] - 1, _MEDIAN_MAX_POINTS, device=pooled.device).long()
        pooled = pooled[idx]
    d = _sqdist(pooled, pooled)
    iu = torch.triu_indices(d.shape[0], d.shape[0], 1, device=d.device)
    return float(d[iu[0], iu[1]].median()) if iu.shape[1] else 0.0


def mmd(xs: Tensor, xt: Tensor, *, bandwidths: Sequence[float] | None = None,
        unbiased: bool = False) -> Tensor:
    """Squared MMD between two point sets with a multi-bandwidth Gaussian kernel.

    ``k(x, y) = sum_h exp(-||x - y||^2 / h)``; ``bandwidths`` are the h, in squared-distance
    units. Default: the median pairwise squared distance of the pooled points (median
    heuristic; no gradient through it) times ``MMD_BANDWIDTH_FACTORS`` = (1/4, 1/2, 1, 2, 4),
    so the kernel sees both local and global structure without tuning.

    Biased (V-statistic) by default: never negative, exactly 0 for identical sets, which is
    what a loss wants; its O(1/n) bias does not move the minimiser much.
    ``unbiased=True`` gives the U-statistic (diagonal terms dropped; can be slightly negative).
    Differentiable in both arguments. Memory: three pairwise matrices, (N,N), (M,M), (N,M),
    and autograd keeps one kernel matrix per bandwidth: meant for batches, not 20k x 20k.
    """
    xs, xt = _check_features(xs, "xs"), _check_features(xt, "xt")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"xs has {xs.shape[1]} features and xt has {xt.shape[1]}")
    dtype = _work_dtype(xs.dtype, xt.dtype)
    x, y = xs.to(dtype), xt.to(dtype)
    if bandwidths is None:
        med = _median_sqdist(x, y)
        if not med > 0:
            raise DataError("all points coincide, so the median heuristic gives no bandwidth; "
                            "pass bandwidths explicitly")
        hs = [med * f for f in MMD_BANDWIDTH_FACTORS]
    else:
        hs = [float(h) for h in bandwidths]
        if not hs or any(not (math.isfinite(h) and h > 0) for h in hs):
            raise ConfigError(f"bandwidths must be positive numbers, got {list(bandwidths)!r}")
    if unbiased and (x.shape[0] < 2 or y.shape[0] < 2):
        raise DataError("the unbiased MMD needs at least 2 points on each side")

    value = (_kernel_mean(_sqdist(x, x), hs, unbiased) + _kernel_mean(_sqdist(y, y), hs, unbiased)
             - 2.0 * _kernel_mean(_sqdist(x, y), hs, False))
    return value.to(xt.dtype)


def _kernel_mean(d: Tensor, hs: Sequence[float], drop_diag: bool) -> Tensor:
    """Mean of the multi-bandwidth Gaussian kernel over a squared-distance matrix (n, m)."""
    k = sum(torch.exp(d / -h) for h in hs)  # (n, m)
    if not drop_diag:
        return k.mean()
    n = d.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


class MMDSource:
    """The biased MMD to one fixed source set, with the source-only work done once.

    The align stage calls the distance every step against the same (up to ~5,000-point)
    source: recomputing its (N, N) kernel each time dominated the step. Here the bandwidths
    are fixed once, from the source's median pairwise squared distance times
    ``MMD_BANDWIDTH_FACTORS`` (so the objective does not shift as the target moves), and the
    source-source term is computed once. ``distance(xt)`` equals
    ``mmd(xs, xt, bandwidths=self.bandwidths)``.
    """

    def __init__(self, xs: Tensor, bandwidths: Sequence[float] | None = None) -> None:
        xs = _check_features(xs, "xs")
        self.dtype = _work_dtype(xs.dtype)
        self.xs = xs.detach().to(self.dtype)
        if bandwidths is None:
            med = _median_sqdist(self.xs, self.xs[:0])
            if not med > 0:
                raise DataError("all source points coincide, so the median heuristic gives no "
                                "bandwidth; pass bandwidths explicitly")
            bandwidths = [med * f for f in MMD_BANDWIDTH_FACTORS]
        self.bandwidths = [float(h) for h in bandwidths]
        with torch.no_grad():
            self.source_term = _kernel_mean(_sqdist(self.xs, self.xs), self.bandwidths, False)

    def distance(self, xt: Tensor) -> Tensor:
        xt = _check_features(xt, "xt")
        if xt.shape[1] != self.xs.shape[1]:
            raise DataError(f"the source has {self.xs.shape[1]} features and xt has {xt.shape[1]}")
        y = xt.to(self.dtype)
        value = (self.source_term + _kernel_mean(_sqdist(y, y), self.bandwidths, False)
                 - 2.0 * _kernel_mean(_sqdist(self.xs, y), self.bandwidths, False))
        return value.to(xt.dtype)
