"""Distances between the embedded target data and the source reference (the "align" stage).

- :func:`otdd`: optimal transport dataset distance (Alvarez-Melis & Fusi, 2020) between
  labelled point sets, with a Gaussian (default) or exact inner label distance and an entropic
  outer problem solved by a stabilised Sinkhorn.
- :class:`OTDDSource`: everything that depends only on the source, computed once, so that the
  align stage (a new target batch every step against a fixed source) does only target work.
- :func:`mmd`: squared maximum mean discrepancy, multi-bandwidth Gaussian kernel.
- :func:`l2`: squared distance between feature means plus between per-dimension stds.

All return a scalar tensor differentiable with respect to the target features. OTDD treats the
source as a fixed reference (no gradient flows to ``xs``); MMD and L2 are plain autograd
expressions and differentiate in both arguments.

Which to use:

- :func:`otdd` (``--align otdd``, ORCA) when both sides are labelled (or pseudo-labelled): the
  only one that compares class structure, not just the point clouds. Use
  ``objective="entropic"`` when value and gradient must agree (the align stage does); for many
  target batches against one source build an :class:`OTDDSource` once.
  :func:`label_distances` gives the (Ks, Kt) class-to-class part alone.
- :func:`mmd` when there are no labels to use: it compares the point clouds as wholes through
  a kernel; :class:`MMDSource` fixes the bandwidths and the source term once for a fixed source.
- :func:`l2` as the baseline: means and per-feature spreads only, no correlations, no labels.

Memory: no (N, M, D) tensor is ever formed; squared distances come from
``||x||^2 + ||y||^2 - 2 x y^T`` (one matrix product). The outer OT holds exactly one (N, M)
buffer: the cost is written into it, turned into the Gibbs kernel in place, and the gradient
is assembled from small aggregates of the plan instead of an autograd graph over the cost.

This module is the public API; the code lives in private modules of this package:
``_otdd`` (OTDD, :class:`OTDDSource`, options and defaults), ``_label`` (the label term:
class statistics, Bures and exact W2 between classes), ``_sqrtm`` (PSD square roots with
finite gradients), ``_sinkhorn`` (the entropic OT solver and its checks), ``_mmd`` (MMD),
``_moments`` (L2) and ``_utils`` (input checks, dtypes, squared distances).
"""
from ._label import label_distances
from ._mmd import MMD_BANDWIDTH_FACTORS, MMDSource, mmd
from ._moments import l2
from ._otdd import DEFAULT_MAX_ITER, DEFAULT_REG, DEFAULT_TOL, OTDDSource, otdd
from ._sinkhorn import OTNumericalError, SinkhornConvergenceWarning
from ._sqrtm import _one_thread  # noqa: F401  (re-exported: bench/align_speed.py imports it from here)

__all__ = [
    "otdd",
    "OTDDSource",
    "mmd",
    "MMDSource",
    "l2",
    "label_distances",
    "OTNumericalError",
    "SinkhornConvergenceWarning",
    "DEFAULT_REG",
    "DEFAULT_MAX_ITER",
    "DEFAULT_TOL",
    "MMD_BANDWIDTH_FACTORS",
]
