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

Memory: no (N, M, D) tensor is ever formed; squared distances come from
``||x||^2 + ||y||^2 - 2 x y^T`` (one matrix product). The outer OT holds exactly one (N, M)
buffer: the cost is written into it, turned into the Gibbs kernel in place, and the gradient
is assembled from small aggregates of the plan instead of an autograd graph over the cost.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from transmodal.errors import ConfigError, DataError, TransmodalError

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

# Defaults (why, in the otdd docstring).
DEFAULT_REG = 0.05
DEFAULT_MAX_ITER = 1000
DEFAULT_TOL = 1e-4
MMD_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
_MEDIAN_MAX_POINTS = 1024  # the median heuristic looks at most at this many pooled points

# The label term is small-matrix linear algebra (class covariances, eigenvalues) where float32
# loses digits to cancellation in tr S1 + tr S2 - 2 tr sqrt(.): on the benchmark's 5,000-point
# 384-d classes float32 statistics were off by up to 8% (measured); float64 costs ~2x there.
_STATS_DTYPE = torch.float64


class OTNumericalError(TransmodalError):
    """Sinkhorn produced NaN or inf: the regularisation is too small for the cost scale."""


class SinkhornConvergenceWarning(UserWarning):
    """Sinkhorn stopped at ``max_iter`` with the marginal error above ``tol``."""


# ----------------------------------------------------------------------------- validation


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


# ------------------------------------------------------------------ matrix square roots


@contextlib.contextmanager
def _one_thread(t: Tensor) -> Iterator[None]:
    """Run small eigendecompositions on one CPU thread.

    Threads do not help matrices this small, and MKL's threaded eigh spin-waits: on the
    2-core machine under load, a batch of 100 eigh(100 x 100) took 17 s with 2 threads and
    0.14 s with 1 (measured). torch's thread count is process-wide, so it is restored at once.
    """
    n = torch.get_num_threads()
    if t.device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _eigh(g: Tensor) -> tuple[Tensor, Tensor]:
    with _one_thread(g):
        return torch.linalg.eigh(g)


def _eigvalsh(g: Tensor) -> Tensor:
    with _one_thread(g):
        return torch.linalg.eigvalsh(g)


def _psd_keep(lam: Tensor) -> Tensor:
    """Eigenvalues indistinguishable from rounding noise are treated as exact zeros."""
    size = lam.shape[-1]
    floor = lam[..., -1:].clamp_min(0.0) * (size * torch.finfo(lam.dtype).eps)
    return lam > floor


class _TraceSqrtPSD(torch.autograd.Function):
    """sum(sqrt(eig(G))) for symmetric PSD G (..., r, r), with a pseudo-inverse gradient.

    The gradient 0.5 G^{+1/2} never divides by eigenvalue gaps (unlike autograd through
    eigh, which is NaN for the repeated zero eigenvalues of singular class covariances).
    Our G are always Gram forms F S F^T, whose first-order change has no component along the
    null space, so the pseudo-inverse is the exact gradient there.
    """

    @staticmethod
    def forward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        if ctx.needs_input_grad[0]:
            lam, vec = _eigh(g)
        else:
            lam, vec = _eigvalsh(g), None
        keep = _psd_keep(lam)
        s = torch.where(keep, lam.clamp_min(0.0).sqrt(), torch.zeros_like(lam))
        if vec is not None:
            inv = torch.where(keep, 0.5 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
            ctx.save_for_backward(vec, inv)
        return s.sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        vec, inv = ctx.saved_tensors
        return (vec * inv[..., None, :]) @ vec.mT * grad[..., None, None]


class _SqrtmPSD(torch.autograd.Function):
    """Symmetric PSD square root with the Lyapunov (not eigen-gap) backward.

    d sqrt(S) solves Y dY + dY Y = dS; in the eigenbasis the adjoint divides by s_i + s_j,
    which stays finite for repeated eigenvalues.
    """

    @staticmethod
    def forward(ctx, s: Tensor) -> Tensor:  # type: ignore[override]
        lam, vec = _eigh(s)
        r = torch.where(_psd_keep(lam), lam.clamp_min(0.0).sqrt(), torch.zeros_like(lam))
        ctx.save_for_backward(vec, r)
        return (vec * r[..., None, :]) @ vec.mT

    @staticmethod
    def backward(ctx, gy: Tensor) -> Tensor:  # type: ignore[override]
        vec, r = ctx.saved_tensors
        gt = vec.mT @ gy @ vec
        denom = r[..., :, None] + r[..., None, :]
        x = torch.where(denom > 0, gt / torch.where(denom > 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(gt))
        x = vec @ x @ vec.mT
        return 0.5 * (x + x.mT)


# ------------------------------------------------------------------------- label term


@dataclass
class _Classes:
    """Per-class statistics of a labelled point set, in float64, points grouped by class.

    Row i of ``centered`` is (x_i - mu_k) / sqrt(n_k) for its class k, so the (biased, 1/n)
    class covariance is S_k = C_k^T C_k over the class's rows; keeping C_k lets a class with
    at most D points use an n_k x n_k Gram matrix instead of a D x D one.
    """

    counts: list[int]
    starts: list[int]
    index: Tensor  # (N,) class of each grouped row
    points: Tensor  # (N, D) grouped by class
    centered: Tensor  # (N, D)
    means: Tensor  # (K, D)
    traces: Tensor  # (K,) tr S_k
    _padded: Tensor | None = None
    _covs: Tensor | None = None
    _sqrts: Tensor | None = None

    @classmethod
    def build(cls, x: Tensor, index: Tensor, k: int) -> "_Classes":
        x = x.to(_STATS_DTYPE)
        order = torch.argsort(index, stable=True)
        idx = index[order]  # (N,) sorted
        pts = x[order]  # (N, D)
        counts_t = torch.bincount(index, minlength=k)  # (K,)
        cnt = counts_t.to(pts.dtype)
        means = pts.new_zeros(k, pts.shape[1]).index_add(0, idx, pts) / cnt[:, None]  # (K, D)
        centered = (pts - means[idx]) * cnt.rsqrt()[idx][:, None]  # (N, D)
        traces = pts.new_zeros(k).index_add(0, idx, centered.pow(2).sum(1))  # (K,)
        counts = counts_t.tolist()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        return cls(counts, starts, idx, pts, centered, means, traces)

    @property
    def k(self) -> int:
        return len(self.counts)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def rows(self, t: Tensor, k: int) -> Tensor:
        """The rows of class k in a grouped (N, ...) tensor."""
        return t[self.starts[k]:self.starts[k] + self.counts[k]]

    def padded(self) -> Tensor:
        """(K, n_pad, D): centred rows of each class with at most D points, zero-padded to
        the largest such class (zero rows add zero eigenvalues only); zeros for larger
        classes. Built once, in one scatter."""
        if self._padded is None:
            d = self.dim
            small = torch.tensor([c <= d for c in self.counts], device=self.index.device)[self.index]
            n_pad = max([c for c in self.counts if c <= d], default=0)
            start = torch.tensor(self.starts, device=self.index.device)
            pos = torch.arange(self.index.shape[0], device=self.index.device) - start[self.index]
            self._padded = self.centered.new_zeros(self.k, n_pad, d).index_put(
                (self.index[small], pos[small]), self.centered[small])
        return self._padded

    def covs(self) -> Tensor:
        """(K, D, D) class covariances, computed on first use."""
        if self._covs is None:
            padded = self.padded()
            covs = padded.mT @ padded  # small classes; zeros for the others
            large = [k for k, c in enumerate(self.counts) if c > self.dim]
            if large:
                big = torch.stack([self.rows(self.centered, k).T @ self.rows(self.centered, k)
                                   for k in large])
                covs = covs.index_put((torch.tensor(large, device=covs.device),), big)
            self._covs = covs
        return self._covs

    def sqrts(self) -> Tensor:
        """(K, D, D) covariance square roots of the classes with more than D points (zeros
        for the others, which never need one), computed once."""
        if self._sqrts is None:
            covs = self.covs()
            large = [k for k, c in enumerate(self.counts) if c > self.dim]
            if len(large) == self.k:
                self._sqrts = _SqrtmPSD.apply(covs)
            else:
                roots = _SqrtmPSD.apply(covs[large]) if large else covs[:0]
                self._sqrts = torch.zeros_like(covs).index_put(
                    (torch.tensor(large, dtype=torch.long, device=covs.device),), roots)
        return self._sqrts

    def to(self, device: torch.device) -> "_Classes":
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return _Classes(list(self.counts), list(self.starts), mv(self.index), mv(self.points),
                        mv(self.centered), mv(self.means), mv(self.traces), mv(self._padded),
                        mv(self._covs), mv(self._sqrts))


def _scatter_pairs(ka: int, kb: int, ks: list[int], ls: list[int], vals: list[Tensor],
                   like: Tensor) -> Tensor:
    """(ka, kb) zeros with vals[i] at (ks[i], ls[i]), differentiable."""
    out = like.new_zeros(ka, kb)
    if vals:
        idx = (torch.tensor(ks, device=like.device), torch.tensor(ls, device=like.device))
        out = out.index_put(idx, torch.cat(vals))
    return out


def _take(t: Tensor, ks: list[int]) -> Tensor:
    """t[ks] along dim 0, as a view when ks is a contiguous range (no copy)."""
    if ks == list(range(ks[0], ks[0] + len(ks))):
        return t[ks[0]:ks[0] + len(ks)]
    return t[ks]


_CHUNK = 1 << 23  # entries per temporary in the batched label-term products (64 MB in float64)


def _traces_points_points(pa: Tensor, pb: Tensor) -> Tensor:
    """(A, B) tr sqrt for classes given by padded centred points pa (A, na, D), pb (B, nb, D).

    S_k = C_k^T C_k, so the eigenvalues of S_k^1/2 S_l S_k^1/2 are the squared singular
    values of X = C_k C_l^T (na x nb): one (A na) x (B nb) product, no D x D work at all.
    """
    a, na, d = pa.shape
    b, nb, _ = pb.shape
    step = max(1, _CHUNK // max(1, na * b * nb))
    out = []
    for i in range(0, a, step):
        p = pa[i:i + step]
        x = (p.reshape(-1, d) @ pb.reshape(-1, d).T).view(p.shape[0], na, b, nb).transpose(1, 2)
        gram = x @ x.mT if na <= nb else x.mT @ x  # (g, B, r, r), r = min(na, nb)
        out.append(_TraceSqrtPSD.apply(gram))
    return torch.cat(out)


class _CovPointsTrace(torch.autograd.Function):
    """(K, B) sum(sqrt(eig(C_l S_k C_l^T))) for covariances S (K, D, D) and padded centred
    points C (B, n, D), all pairs batched, with a hand-written backward.

    Forward: Q_kl = C_l S_k for all pairs in one product with the S_k side by side
    ([S_1 | ... | S_K], D x KD), then G_kl = Q_kl C_l^T. Backward reuses Q:
    dC_l = sum_k 2 Gbar_kl Q_kl costs n^2 D per pair where autograd would spend n D^2 again
    (dQ S); Gbar = 0.5 G^{+1/2} as in :class:`_TraceSqrtPSD`.
    """

    @staticmethod
    def forward(ctx, covs: Tensor, pb: Tensor) -> Tensor:  # type: ignore[override]
        k, d, _ = covs.shape
        b, n, _ = pb.shape
        s_cat = covs.permute(1, 0, 2).reshape(d, k * d)  # (D, K D)
        q = (pb.reshape(b * n, d) @ s_cat).view(b, n * k, d)  # row m K + k of block l: (C_l S_k)_m
        g = torch.bmm(q, pb.mT).view(b, n, k, n).permute(0, 2, 1, 3)  # (B, K, n, n) = G_kl
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        lam, vec = _eigh(g) if need else (_eigvalsh(g), None)
        keep = _psd_keep(lam)
        s = torch.where(keep, lam.clamp_min(0.0).sqrt(), torch.zeros_like(lam))
        if need:
            inv = torch.where(keep, 0.5 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
            ctx.save_for_backward(pb, q, vec, inv)
        return s.sum(-1).T  # (K, B)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        pb, q, vec, inv = ctx.saved_tensors
        b, n, d = pb.shape
        k = q.shape[1] // n
        gbar = (vec * inv[..., None, :]) @ vec.mT * grad.T[..., None, None]  # (B, K, n, n), symmetric
        grad_covs = grad_pb = None
        if ctx.needs_input_grad[1]:
            gp = gbar.permute(0, 2, 3, 1).reshape(b, n, n * k)  # [l, i, m K + k] = Gbar_kl[i, m]
            grad_pb = 2.0 * torch.bmm(gp, q)  # (B, n, D)
        if ctx.needs_input_grad[0]:
            grad_covs = torch.einsum("lid,lkij,lje->kde", pb, gbar, pb)  # sum_l C_l^T Gbar_kl C_l
        return grad_covs, grad_pb


def _traces_cov_points(covs: Tensor, pb: Tensor) -> Tensor:
    """(K, B) tr sqrt for classes given by covariances (K, D, D) and by padded centred
    points pb (B, nb, D): eigenvalues of C_l S_k C_l^T (nb x nb), chunked over K."""
    k, d, _ = covs.shape
    b, nb, _ = pb.shape
    step = max(1, _CHUNK // max(1, b * nb * d))
    return torch.cat([_CovPointsTrace.apply(covs[i:i + step], pb) for i in range(0, k, step)])


def _bures_traces(a: _Classes, b: _Classes, upper: bool) -> Tensor:
    """(KA, KB) tr((S_a^1/2 S_b S_a^1/2)^1/2); ``upper``: b is a, result symmetric.

    The eigenvalues are those of F S F'^T for factors F^T F = S, so each pair uses the
    cheapest form. A class with at most D points is "small" and is represented by its
    centred points (singular covariance handled exactly); a larger one by its covariance.
    small x small: cross products of the points (n_k x n_l); large x small: the small class's
    points around the large one's covariance (n x n); large x large: D x D with the
    covariance square root. Each kind is one batched product and eigendecomposition: with
    one operation per pair, the overheads dominate.
    """
    d = a.dim
    small_a = [k for k in range(a.k) if a.counts[k] <= d]
    large_a = [k for k in range(a.k) if a.counts[k] > d]
    small_b = [l for l in range(b.k) if b.counts[l] <= d]
    large_b = [l for l in range(b.k) if b.counts[l] > d]
    t = a.means.new_zeros(a.k, b.k)
    done = torch.zeros(a.k, b.k, dtype=torch.bool)

    def put(ks: list[int], ls: list[int], vals: Tensor) -> None:
        nonlocal t
        rows = torch.tensor(ks, device=t.device)[:, None]
        cols = torch.tensor(ls, device=t.device)[None, :]
        t = t.index_put((rows, cols), vals)
        done[torch.tensor(ks)[:, None], torch.tensor(ls)[None, :]] = True

    if small_a and small_b:
        put(small_a, small_b, _traces_points_points(_take(a.padded(), small_a), _take(b.padded(), small_b)))
    if large_a and small_b:
        put(large_a, small_b, _traces_cov_points(_take(a.covs(), large_a), _take(b.padded(), small_b)))
    if small_a and large_b and not upper:  # with upper: the transposes of the previous block
        put(small_a, large_b, _traces_cov_points(_take(b.covs(), large_b), _take(a.padded(), small_a)).T)
    for l in large_b:
        ks = [k for k in large_a if not upper or k < l]
        if ks:
            r = _take(a.sqrts(), ks)  # (g, D, D)
            put(ks, [l], _TraceSqrtPSD.apply(r @ b.covs()[l] @ r)[:, None])
    if upper:
        done_t = done.to(t.device)
        both = done_t & done_t.T
        t = torch.where(both, 0.5 * (t + t.T), torch.where(done_t, t, t.T))
    return t


def _gaussian_w2(a: _Classes, b: _Classes | None) -> Tensor:
    """(KA, KB) squared 2-Wasserstein (Bures) distances between class Gaussians.

    ``b=None`` compares ``a`` with itself: symmetric and exactly zero on the diagonal (the
    D x D pairs, the expensive ones, are computed once each).
    """
    upper = b is None
    b = a if b is None else b
    mean_sq = (a.means[:, None, :] - b.means[None, :, :]).pow(2).sum(-1)  # (KA, KB)
    w = mean_sq + a.traces[:, None] + b.traces[None, :] - 2.0 * _bures_traces(a, b, upper)
    w = w.clamp_min(0.0)
    if upper:
        w = w * (1.0 - torch.eye(a.k, dtype=w.dtype, device=w.device))
    return w


def _exact_w2(a: _Classes, b: _Classes | None) -> Tensor:
    """(KA, KB) squared 2-Wasserstein distances between class point clouds, by exact OT.

    The plan comes from ``ot.emd`` (no gradient); the value is <P, C> with C built by
    autograd, so the gradient is the envelope gradient of the exact OT problem.
    """
    import ot

    upper = b is None
    b = a if b is None else b
    ks_all: list[int] = []
    ls_all: list[int] = []
    vals: list[Tensor] = []
    for l in range(b.k):
        xl = b.rows(b.points, l)
        for k in range(l) if upper else range(a.k):
            xk = a.rows(a.points, k)
            cost = _sqdist(xk, xl)  # (n_k, n_l)
            c_np = cost.detach().cpu().numpy()
            wa = np.full(xk.shape[0], 1.0 / xk.shape[0])
            wb = np.full(xl.shape[0], 1.0 / xl.shape[0])
            plan = ot.emd(wa, wb, c_np, numItermax=max(100_000, 50 * c_np.size))
            vals.append((torch.from_numpy(plan).to(cost) * cost).sum()[None])
            ks_all.append(k)
            ls_all.append(l)
    w = _scatter_pairs(a.k, b.k, ks_all, ls_all, vals, a.means)
    return w + w.T if upper else w


def label_distances(xs: Tensor, ys: Tensor, xt: Tensor | None = None, yt: Tensor | None = None,
                    *, inner: str = "gaussian") -> Tensor:
    """(Ks, Kt) squared W2 between the class-conditional distributions of two labelled sets.

    Classes are ordered by sorted class id. ``inner="gaussian"``: Bures-Wasserstein between
    class means and (biased, 1/n) covariances, exact for singular covariances (no ridge).
    ``inner="exact"``: exact OT between the class point clouds, uniform weights. With
    ``xt=None`` the source is compared with itself. Returned in float64, differentiable.
    """
    if inner not in ("gaussian", "exact"):
        raise ConfigError(f"inner must be 'gaussian' or 'exact', got {inner!r}")
    xs = _check_features(xs, "xs")
    ia, ka = _class_index(ys, xs.shape[0], "ys")
    a = _Classes.build(xs, ia, ka)
    b = None
    if xt is not None:
        xt = _check_features(xt, "xt")
        ib, kb = _class_index(yt, xt.shape[0], "yt")
        b = _Classes.build(xt, ib, kb)
    return _gaussian_w2(a, b) if inner == "gaussian" else _exact_w2(a, b)


# ---------------------------------------------------------------------------- Sinkhorn


@dataclass
class _Plan:
    """Entropic plan P_ij = u_i K_ij v_j with K = exp((f_i + g_j - C_ij) / eps) (one buffer)."""

    kernel: Tensor  # (N, M), overwritten in place: no other (N, M) tensor is kept
    u: Tensor  # (N,)
    v: Tensor  # (M,)
    f: Tensor  # (N,) potentials already absorbed into the kernel
    g: Tensor  # (M,)
    rows: Tensor  # (N,) marginals of P
    cols: Tensor  # (M,)
    n_iter: int
    err: float


def _limits(dtype: torch.dtype) -> tuple[float, float]:
    """(lo, tau): kernel exponents below lo become exact zeros (no subnormals, which are
    slow on CPUs); scalings beyond exp(+-tau) are absorbed into the potentials. u*v stays below
    exp(2 tau), so an entry dropped at exp(lo) would have carried less than exp(2 tau + lo)
    (e^-35 in float32)."""
    lo = math.log(torch.finfo(dtype).tiny) + 0.5
    return lo, 0.3 * abs(lo)


def _exp_neg_(buf: Tensor, eps: float, lo: float) -> None:
    """In place: buf <- exp(-buf / eps), exponents below lo set to exact zeros."""
    buf.mul_(-1.0 / eps)
    F.threshold_(buf, lo, -math.inf)
    buf.exp_()


def _kernel_(buf: Tensor, f: Tensor, g: Tensor, eps: float, lo: float) -> None:
    """In place: buf holds C on entry, exp((f_i + g_j - C_ij) / eps) on exit."""
    buf.sub_(f[:, None]).sub_(g[None, :])
    _exp_neg_(buf, eps, lo)


def _check(err: Tensor, u: Tensor, v: Tensor) -> tuple[float, float]:
    """(marginal error, max |log| of the scalings) in one device sync."""
    u_lo, u_hi = torch.aminmax(u)
    v_lo, v_hi = torch.aminmax(v)
    stats = torch.stack([err, u_hi, v_hi, 1.0 / u_lo, 1.0 / v_lo]).tolist()
    big = max(stats[1:])
    return stats[0], math.log(big) if big > 0 and math.isfinite(big) else math.inf


def _sinkhorn(fill_cost: Callable[[Tensor], None], n: int, m: int, eps: float, *,
              symmetric: bool, max_iter: int, tol: float, check_every: int,
              dtype: torch.dtype, device: torch.device) -> _Plan:
    """Entropic OT between uniform weights, POT's convention: min <P, C> + eps KL(P | a b^T).

    Scaling-form Sinkhorn (two matrix-vector products per iteration, no exp in the loop) on
    a kernel stabilised by potentials (Schmitzer 2019): the kernel starts from the
    c-transform potentials g_j = min_i C_ij, f_i = min_j (C_ij - g_j), so every row and column
    has an entry equal to 1, and scalings that leave [e^-tau, e^tau] are absorbed into the
    potentials and the kernel is rebuilt exactly from the cost. This has the stability of the
    log-domain algorithm at the speed of the plain one (a log-sum-exp pass costs 15-30x a
    matrix-vector product on CPU). The stopping error is the L1 violation of the column
    marginal (rows are exact after each update); it comes for free from the next product.
    ``symmetric`` (C = C^T, zero diagonal): one product per iteration with the averaged
    update u <- sqrt(u a / K u), which converges in a few iterations.
    """
    lo, tau = _limits(dtype)
    a, b = 1.0 / n, 1.0 / m
    kernel = torch.empty(n, m, dtype=dtype, device=device)
    fill_cost(kernel)
    if symmetric:
        f = g = torch.zeros(n, dtype=dtype, device=device)  # the zero diagonal is each row's min
    else:
        g = kernel.amin(0)  # (M,)
        kernel.sub_(g[None, :])
        f = kernel.amin(1)  # (N,)
        kernel.sub_(f[:, None])
    _exp_neg_(kernel, eps, lo)

    def absorb(fu: Tensor, gv: Tensor) -> None:
        nonlocal f, g
        f = f + eps * fu.log()
        g = f if symmetric else g + eps * gv.log()
        fill_cost(kernel)
        _kernel_(kernel, f, g, eps, lo)

    def fail(it: int) -> OTNumericalError:
        return OTNumericalError(
            f"Sinkhorn produced NaN/inf at iteration {it} (eps={eps:.3g}); the features or the "
            "regularisation are badly scaled: normalise the features or increase reg")

    it = 0
    err = math.inf
    if symmetric:
        u = torch.full((n,), math.sqrt(a), dtype=dtype, device=device)
        while True:
            ku = torch.mv(kernel, u)  # (N,)
            it += 1
            if it % check_every == 0 or it >= max_iter:
                rows = u * ku
                err, big = _check((rows - a).abs().sum(), u, u)
                if not math.isfinite(err):
                    raise fail(it)
                if err <= tol or it >= max_iter:
                    break
                if big > tau:
                    absorb(u, u)
                    u = torch.ones_like(u)
                    continue
            u = (u * a / ku).sqrt_()
        plan = _Plan(kernel, u, u, f, f, rows, rows, it, err)
    else:
        v = torch.ones(m, dtype=dtype, device=device)
        u = a / torch.mv(kernel, v)
        while True:
            ktu = torch.mv(kernel.T, u)  # (M,)
            it += 1
            if it % check_every == 0 or it >= max_iter:
                cols = v * ktu
                err, big = _check((cols - b).abs().sum(), u, v)
                if not math.isfinite(err):
                    raise fail(it)
                if err <= tol or it >= max_iter:
                    break
                if big > tau:
                    absorb(u, v)
                    u, v = torch.ones_like(u), torch.ones_like(v)
                    continue
            v = b / ktu
            u = a / torch.mv(kernel, v)
        rows = torch.full((n,), a, dtype=dtype, device=device)  # exact: u = a / (K v)
        plan = _Plan(kernel, u, v, f, g, rows, cols, it, err)
    if err > tol:
        warnings.warn(
            f"Sinkhorn did not converge in {max_iter} iterations (marginal error {err:.2e} > "
            f"tol {tol:.1e}); increase max_iter or reg", SinkhornConvergenceWarning, stacklevel=4)
    return plan


def _plan_cost(p: _Plan, eps: float) -> Tensor:
    """<P, C> without the cost matrix: C_ij = f_i + g_j - eps log K_ij (0-d tensor)."""
    s = p.kernel.new_zeros(())
    step = max(1, (1 << 22) // max(1, p.kernel.shape[1]))  # ~4M-entry temporaries
    for i in range(0, p.kernel.shape[0], step):
        blk = p.kernel[i:i + step]
        s += p.u[i:i + step] @ (torch.special.xlogy(blk, blk) @ p.v)
    return (p.rows * p.f).sum() + (p.cols * p.g).sum() - eps * s


def _entropic_minus_cost(p: _Plan, eps: float, cost: Tensor) -> Tensor:
    """eps KL(P | a b^T) = dual value - <P, C>, from the potentials (0-d tensor)."""
    n, m = p.kernel.shape
    dual = ((p.rows * (p.f + eps * p.u.log())).sum() + (p.cols * (p.g + eps * p.v.log())).sum()
            + eps * (math.log(n) + math.log(m)))
    return dual - cost


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Options:
    reg: float = DEFAULT_REG
    reg_relative: bool = True
    debiased: bool = True
    inner: str = "gaussian"
    label_cost: bool = True
    objective: str = "cost"
    max_iter: int = DEFAULT_MAX_ITER
    tol: float = DEFAULT_TOL

    def __post_init__(self) -> None:
        if not (isinstance(self.reg, (int, float)) and math.isfinite(self.reg) and self.reg > 0):
            raise ConfigError(f"reg must be a positive number, got {self.reg!r}")
        if self.inner not in ("gaussian", "exact"):
            raise ConfigError(f"inner must be 'gaussian' or 'exact', got {self.inner!r}")
        if self.objective not in ("cost", "entropic"):
            raise ConfigError(f"objective must be 'cost' or 'entropic', got {self.objective!r}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ConfigError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ConfigError(f"tol must be a positive number, got {self.tol!r}")


# ------------------------------------------------------------------------------ OTDD


@dataclass
class _SourceOn:
    """The source converted to one (device, dtype), cached by OTDDSource."""

    x: Tensor  # (N, D)
    sqn: Tensor  # (N,) squared norms
    index: Tensor  # (N,)
    left: Tensor  # (N, D + 2) = [-2 x, |x|^2, 1]: the source side of the cost product
    agg: Tensor  # (N, D + Ks) = [x, onehot(y)]: what the plan is applied to for the gradient
    classes: _Classes | None  # float64, on the device


class OTDDSource:
    """Source side of :func:`otdd`, precomputed once and reused for every target batch.

    Holds the source features (detached: the source is a fixed reference), class ids,
    class means / covariances (and, lazily, covariance square roots), squared norms, the
    entropic scale ``eps`` and, for the debiased loss, the source-source self term
    OT(source, source) (its Sinkhorn and its Ks x Ks label distances). A call then costs
    one N x M problem plus the M x M target self term, instead of also the N x N one.

    The options (see :func:`otdd`) are fixed here because the self term and ``eps`` depend
    on them; :func:`otdd` raises if a call asks for different ones.
    """

    def __init__(self, xs: Tensor, ys: Tensor | None = None, *, reg: float = DEFAULT_REG,
                 reg_relative: bool = True, debiased: bool = True, inner: str = "gaussian",
                 label_cost: bool = True, objective: str = "cost",
                 max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL,
                 check_every: int | None = None) -> None:
        self.options = _Options(float(reg), bool(reg_relative), bool(debiased), inner,
                                bool(label_cost), objective, max_iter, float(tol))
        self._given = (xs, ys)  # to recognise them when passed again with source=
        xs = _check_features(xs, "xs").detach()
        self.xs = xs
        n, d = xs.shape
        self.n, self.dim = n, d
        if self.options.label_cost:
            self.index, self.n_classes = _class_index(ys, n, "ys")
            self.classes: _Classes | None = _Classes.build(xs, self.index, self.n_classes)
        else:
            self.index = torch.zeros(n, dtype=torch.long, device=xs.device)
            self.n_classes, self.classes = 1, None
        # eps is tied to the source spread so that it does not move with each target batch
        # and all three terms of the debiased loss share it.
        x64 = xs.to(torch.float64)
        self.scale = float(2.0 * x64.var(0, unbiased=False).sum()) if n > 1 else 0.0
        if self.options.reg_relative:
            if not self.scale > 0:
                raise DataError("the source features have zero spread, so a relative reg is "
                                "undefined; pass reg_relative=False with an absolute reg")
            self.eps = self.options.reg * self.scale
        else:
            self.eps = self.options.reg
        self._views: dict[tuple[torch.device, torch.dtype], _SourceOn] = {}
        self.w_self: Tensor | None = None  # (Ks, Ks) source-source label distances
        self.self_term: float | None = None
        if self.options.debiased:
            with torch.no_grad():
                self.self_term = self._self_term(check_every)

    # -- helpers ---------------------------------------------------------------------

    def _on(self, device: torch.device, dtype: torch.dtype) -> _SourceOn:
        key = (device, dtype)
        if key not in self._views:
            x = self.xs.to(device=device, dtype=dtype)
            index = self.index.to(device)
            classes = self.classes
            if classes is not None and classes.means.device != device:
                classes = classes.to(device)
            sqn = (x * x).sum(1)  # (N,)
            left = torch.cat([-2.0 * x, sqn[:, None], torch.ones_like(sqn)[:, None]], 1)
            agg = torch.cat([x, F.one_hot(index, self.n_classes).to(dtype)], 1)
            self._views[key] = _SourceOn(x, sqn, index, left, agg, classes)
        return self._views[key]

    def _label_w(self, a: _Classes, b: _Classes | None) -> Tensor:
        return _gaussian_w2(a, b) if self.options.inner == "gaussian" else _exact_w2(a, b)

    def _self_term(self, check_every: int | None) -> float:
        dtype = _work_dtype(self.xs.dtype)
        src = self._on(self.xs.device, dtype)
        w = None
        if src.classes is not None:
            self.w_self = self._label_w(src.classes, None)
            w = self.w_self.to(dtype)
        return float(_self_ot(src.x, src.sqn, src.index, w, self.eps, self.options,
                              _check_every(check_every, self.xs.device)))

    # -- the distance ----------------------------------------------------------------

    def distance(self, xt: Tensor, yt: Tensor | None = None, *,
                 check_every: int | None = None) -> Tensor:
        """OTDD between this source and the target (xt, yt); see :func:`otdd`."""
        o = self.options
        xt = _check_features(xt, "xt")
        if xt.shape[1] != self.dim:
            raise DataError(f"xt has {xt.shape[1]} features but the source has {self.dim}")
        m = xt.shape[0]
        dtype = _work_dtype(xt.dtype, self.xs.dtype)
        every = _check_every(check_every, xt.device)
        src = self._on(xt.device, dtype)
        x = xt.to(dtype)  # differentiable cast
        if o.label_cost:
            t_index, kt = _class_index(yt, m, "yt")
            t_index = t_index.to(xt.device)
            t_classes = _Classes.build(x, t_index, kt)
            s_classes = src.classes if src.classes is not None else self.classes  # set: label_cost
            w_st = self._label_w(s_classes, t_classes).to(dtype)  # (Ks, Kt)
        else:
            t_index, kt, t_classes, w_st = torch.zeros(m, dtype=torch.long, device=xt.device), 1, None, None
        onehot_t = F.one_hot(t_index, kt).to(dtype)  # (M, Kt)
        grad = torch.is_grad_enabled() and x.requires_grad

        # ---- cross term OT(source, target)
        n = self.n
        w_det = None if w_st is None else w_st.detach()
        with torch.no_grad():
            xd = x.detach()
            right = [xd, xd.new_ones(m, 1), (xd * xd).sum(1)[:, None]]
            left_m = src.left
            if w_det is not None:
                left_m = torch.cat([left_m, w_det[src.index]], 1)  # row i: W(y_i, .)
                right.append(onehot_t)
            right_m = torch.cat(right, 1)  # (M, D + 2 [+ Kt]); left_m: (N, D + 2 [+ Kt])
            plan = _sinkhorn(lambda out: torch.mm(left_m, right_m.T, out=out), n, m, self.eps,
                             symmetric=False, max_iter=o.max_iter, tol=o.tol, check_every=every,
                             dtype=dtype, device=xt.device)
            del left_m, right_m
            if grad:
                # P^T [xs, onehot_s]: the one matrix product the gradient needs.
                agg = torch.mm(plan.kernel.T, plan.u[:, None] * src.agg)
                agg.mul_(plan.v[:, None])  # (M, D + Ks)
                zx = agg[:, :self.dim]  # (M, D) = P^T xs
                pi = agg[:, self.dim:].T @ onehot_t  # (Ks, Kt) class-pair mass
                cost_const = plan.rows @ src.sqn
            else:
                cost_value = _plan_cost(plan, self.eps)
        if grad:
            cost = cost_const + plan.cols @ (x * x).sum(1) - 2.0 * (x * zx).sum()
            if w_st is not None:
                cost = cost + (pi * w_st).sum()
        else:
            cost = cost_value
        if o.objective == "entropic":
            with torch.no_grad():
                shift = _entropic_minus_cost(plan, self.eps, cost.detach())
            cost = cost + shift
        del plan
        total = cost

        # ---- debiasing: 0.5 OT(target, target) and the cached 0.5 OT(source, source)
        if o.debiased:
            w_tt = None
            if t_classes is not None:
                w_tt = self._label_w(t_classes, None).to(dtype)  # (Kt, Kt)
            self_t = _self_ot(x, None, t_index, w_tt, self.eps, o, every)
            total = total - 0.5 * self_t - 0.5 * float(self.self_term or 0.0)
        return total.to(xt.dtype)


def _self_ot(x: Tensor, sqn: Tensor | None, index: Tensor, w: Tensor | None, eps: float,
             o: _Options, every: int) -> Tensor:
    """OT(x, x) with the labelled cost; differentiable in x and w (envelope gradient)."""
    n, d = x.shape
    k = int(w.shape[0]) if w is not None else 1
    onehot = F.one_hot(index, k).to(x.dtype)  # (N, K)
    grad = torch.is_grad_enabled() and (x.requires_grad or (w is not None and w.requires_grad))
    with torch.no_grad():
        xd = x.detach()
        sq = (xd * xd).sum(1) if sqn is None else sqn
        ones = xd.new_ones(n, 1)
        left = [-2.0 * xd, sq[:, None], ones]
        right = [xd, ones, sq[:, None]]
        if w is not None:
            left.append(w.detach()[index])
            right.append(onehot)
        left_m, right_m = torch.cat(left, 1), torch.cat(right, 1)
        plan = _sinkhorn(lambda out: torch.mm(left_m, right_m.T, out=out), n, n, eps,
                         symmetric=True, max_iter=o.max_iter, tol=o.tol, check_every=every,
                         dtype=x.dtype, device=x.device)
        del left_m, right_m
        if grad:
            agg = torch.mm(plan.kernel, plan.u[:, None] * torch.cat([xd, onehot], 1))
            agg.mul_(plan.u[:, None])  # (N, D + K) = P [x, onehot]
            zx = agg[:, :d]
            pi = agg[:, d:].T @ onehot  # (K, K)
        else:
            value = _plan_cost(plan, eps)
    if grad:
        # Sum_ij P_ij (|x_i|^2 + |x_j|^2 - 2 x_i.x_j + W) with P fixed; P symmetric, so the
        # bilinear term's gradient is -4 P x: written as 2 <x, zx> - <x_d, zx>.
        value = (2.0 * plan.rows @ (x * x).sum(1)
                 - 2.0 * (2.0 * (x * zx).sum() - (xd * zx).sum()))
        if w is not None:
            value = value + (pi * w).sum()
    if o.objective == "entropic":
        with torch.no_grad():
            shift = _entropic_minus_cost(plan, eps, value.detach())
        value = value + shift
    return value


def _check_every(check_every: int | None, device: torch.device) -> int:
    """Every iteration on CPU (the error is nearly free there); every 10 on accelerators,
    where reading it back synchronises the device."""
    if check_every is None:
        return 1 if device.type == "cpu" else 10
    if not (isinstance(check_every, int) and check_every >= 1):
        raise ConfigError(f"check_every must be an integer >= 1, got {check_every!r}")
    return check_every


def otdd(xs: Tensor | None, ys: Tensor | None, xt: Tensor, yt: Tensor | None = None, *,
         reg: float | None = None, debiased: bool | None = None, inner: str | None = None,
         max_iter: int | None = None, tol: float | None = None,
         reg_relative: bool | None = None, label_cost: bool | None = None,
         objective: str | None = None, source: OTDDSource | None = None,
         check_every: int | None = None) -> Tensor:
    """Optimal transport dataset distance between (xs, ys) and (xt, yt), a 0-d tensor.

    Ground cost between labelled points z = (x, y), z' = (x', y'):
    ``||x - x'||^2 + W2^2(P_y, P'_y')``, where P_y is the class-conditional feature
    distribution. ``inner="gaussian"`` (default) uses the Bures-Wasserstein closed form
    between class means and (biased, 1/n) covariances: exact for singular covariances of
    classes with fewer points than dimensions (computed through n x n Gram matrices, no ridge
    needed), with a gradient that stays finite there. ``inner="exact"`` uses exact OT
    (``ot.emd``) between the class point clouds. ``label_cost=False`` drops the label term
    (``ys``, ``yt`` may then be None): plain entropic OT on squared distances.

    Outer problem: entropic OT between uniform weights, in POT's convention (``ot.sinkhorn2``
    with ``reg = eps``). ``objective="cost"`` (default) returns the transport cost <P, C>,
    the value ``ot.sinkhorn2`` returns. ``objective="entropic"`` returns <P, C> + eps KL(P|ab),
    the entropic OT value. ``debiased=True`` (default) returns the Sinkhorn divergence
    ``OT(s, t) - OT(s, s)/2 - OT(t, t)/2``, about 0 for identical datasets.

    Gradient: with respect to ``xt`` only (the source is a fixed reference). Sinkhorn runs
    without autograd and the gradient is the envelope gradient <P, dC> with P fixed, so
    backward is one matrix product and no iteration is stored. This is the exact gradient of
    the *entropic* objective; for ``objective="cost"`` it is not the exact gradient of
    <P, C>, which also moves through P: on small Gaussian sets the two differ by ~6% at
    reg 0.01, ~15% at 0.05, ~18% at 0.1 (relative norm). Use ``objective="entropic"`` when
    value and gradient must agree (e.g. finite-difference checks, line searches).

    Defaults and why:

    - ``reg=0.05`` with ``reg_relative=True``: eps = reg x (mean squared distance between
      source points, 2 tr Cov(xs)). Relative, because feature scales differ by orders of
      magnitude between bodies and an absolute eps is either useless (uniform plan) or
      underflows; tied to the source, so eps neither moves with each target batch nor
      differs between the three debiased terms. At 0.05 the plan still resolves neighbours
      (a row of the cost spans ~15-20 eps, std ~3 eps, on 384-d synthetic embeddings) while
      Sinkhorn converges in 4-5 iterations there and in ~35 on low-rank near-duplicate
      data; smaller reg approaches exact OT (``ot.emd2``) but iterations grow roughly like
      1/reg and entropic OT's sample complexity worsens. Near-identical low-dimensional
      sets (each target point next to its own source point) are the slow case.
      ``reg_relative=False``: eps = reg, exactly POT's convention.
    - ``tol=1e-4``: stop when the L1 violation of the column marginal (the fraction of mass
      misplaced; rows are exact) is below 1e-4. Measured value error at this point ~1e-6
      relative; tighter tolerances buy nothing in float32 and converge in a few more
      iterations in float64.
    - ``max_iter=1000`` (as POT): never reached at the default reg; a non-converged run warns
      with :class:`SinkhornConvergenceWarning`.

    NaN/inf in the inputs raise :class:`~transmodal.errors.DataError`; NaN/inf inside
    Sinkhorn (checked every ``check_every`` iterations: 1 on CPU, 10 on GPU) raise
    :class:`OTNumericalError`; both are ``ValueError`` subclasses.

    Pass ``source=OTDDSource(xs, ys, ...)`` (and ``xs=ys=None``) to reuse source-side work
    across calls; options then come from the source.
    """
    given = {k: v for k, v in dict(reg=reg, debiased=debiased, inner=inner, max_iter=max_iter,
                                   tol=tol, reg_relative=reg_relative, label_cost=label_cost,
                                   objective=objective).items() if v is not None}
    if source is None:
        if xs is None:
            raise ConfigError("otdd needs the source: pass xs (and ys) or source=OTDDSource(...)")
        source = OTDDSource(xs, ys, check_every=check_every, **given)
    else:
        if not isinstance(source, OTDDSource):
            raise ConfigError(f"source must be an OTDDSource, got {type(source).__name__}")
        if (xs is not None and xs is not source._given[0]) or (ys is not None and ys is not source._given[1]):
            raise ConfigError("pass either xs, ys or source=OTDDSource(xs, ys), not different ones")
        clash = {k: (v, getattr(source.options, k)) for k, v in given.items()
                 if getattr(source.options, k) != v}
        if clash:
            detail = ", ".join(f"{k}={v!r} (source has {s!r})" for k, (v, s) in clash.items())
            raise ConfigError(f"options differ from the OTDDSource's: {detail}; build the "
                              "source with the options you want")
    return source.distance(xt, yt, check_every=check_every)


# ------------------------------------------------------------------------- MMD and L2


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
