"""The label term of the OTDD ground cost: squared W2 between class-conditional distributions.

Per-class statistics of a labelled point set (:class:`_Classes`: means, covariances, their
square roots, computed once and cached) and the (Ks, Kt) matrix of squared 2-Wasserstein
distances between classes, either Bures-Wasserstein between class Gaussians (each pair in
its cheapest form, all pairs of a kind batched) or exact OT between the class point clouds.
Public entry point: :func:`label_distances`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from transmodal.errors import ConfigError

from ._sqrtm import _eigh, _eigvalsh, _float32_spectrum, _psd_keep, _SqrtmPSD, _TraceSqrtPSD
from ._utils import _check_features, _class_index, _sqdist


# The label term is small-matrix linear algebra (class covariances, eigenvalues) where float32
# loses digits to cancellation in tr S1 + tr S2 - 2 tr sqrt(.): on the benchmark's 5,000-point
# 384-d classes float32 statistics were off by up to 8% (measured); float64 costs ~2x there.
# Statistics stay float64 always; only the value-only D x D eigenproblems of large cross pairs
# run in float32 for float32 features, with a per-pair reliability check and float64 fallback
# (``_traces_cov_cov``): relative error ~1e-6 on the benchmark's classes (measured).
_STATS_DTYPE = torch.float64


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
    low_precision: bool = False  # float32 features: D x D eigenproblems may run in float32
    _padded: Tensor | None = None
    _covs: Tensor | None = None
    _sqrts: Tensor | None = None

    @classmethod
    def build(cls, x: Tensor, index: Tensor, k: int) -> "_Classes":
        low = x.dtype in (torch.float32, torch.float16, torch.bfloat16)
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
        return cls(counts, starts, idx, pts, centered, means, traces, low)

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
            large = [k for k, c in enumerate(self.counts) if c > self.dim]
            # torch.split, not one slice per class: the backward of a slice allocates and
            # zero-fills a full (N, D) gradient per class (1.3 s of 5k x 5k OTDD, measured)
            parts = torch.split(self.centered, self.counts)
            big = torch.stack([parts[k].T @ parts[k] for k in large]) if large else None
            if len(large) == self.k:
                covs = big
            else:
                padded = self.padded()
                covs = padded.mT @ padded  # small classes; zeros for the others
                if large:
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
                        mv(self.centered), mv(self.means), mv(self.traces), self.low_precision,
                        mv(self._padded),
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


def _traces_points_points_upper(p: Tensor) -> tuple[list[int], list[int], Tensor]:
    """Pairs k < l of one set of classes given by padded centred points p (A, n, D):
    (ks, ls, (P,) tr sqrt), as :func:`_traces_points_points` but for the A (A - 1) / 2
    pairs only (the full grid would also solve the diagonal and each pair twice)."""
    a, n, d = p.shape
    ks, ls = torch.triu_indices(a, a, 1).tolist()
    if not ks:
        return [], [], p.new_zeros(0)
    out = []
    step = max(1, _CHUNK // max(1, n * max(n, d)))  # pairs per chunk
    for i in range(0, len(ks), step):
        kk, ll = ks[i:i + step], ls[i:i + step]
        rows = torch.tensor(kk, device=p.device)
        cols = torch.tensor(ll, device=p.device)
        x = torch.bmm(p[rows], p[cols].mT)  # (g, n, n) = C_k C_l^T
        out.append(_TraceSqrtPSD.apply(x @ x.mT))
    return ks, ls, torch.cat(out)


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


class _CovCovTraces(torch.autograd.Function):
    """(P,) sum(sqrt(eig(R_k T_l R_k))) for the pairs (ks[p], ls[p]), square roots R (KA, D, D)
    and covariances T (KB, D, D), computed in ``dtype`` with a hand-written backward; also
    returns which float32 spectra are unreliable (:func:`_float32_spectrum`; none in float64).

    Pairs are grouped by l (one batched product and eigendecomposition per group). Backward
    with Gbar = 0.5 V diag(lam^-1/2) V^T (the gradient of tr sqrt, as in
    :class:`_TraceSqrtPSD`): dT_l = sum_k R_k Gbar_kl R_k = Y Y^T with Y = [R_k V_kl
    diag(w_kl)] side by side (one D x gD product per group), dR_k = M + M^T with
    M = Gbar_kl R_k T_l. Gradients go straight into full (K, D, D) buffers: slicing the inputs
    per group would allocate and zero-fill a full gradient per slice in autograd.
    Inputs and gradients are float64; only the work runs in ``dtype``.
    """

    @staticmethod
    def forward(ctx, r: Tensor, t: Tensor, ks: list[int], ls: list[int],  # type: ignore[override]
                dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        rw, tw = r.to(dtype), t.to(dtype)
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        vals = torch.zeros(len(ks), dtype=r.dtype, device=r.device)
        bad = torch.zeros(len(ks), dtype=torch.bool, device=r.device)
        groups = []
        for l in sorted(set(ls)):
            sel = [p for p, lp in enumerate(ls) if lp == l]
            kk = [ks[p] for p in sel]
            rk = _take(rw, kk)  # (g, D, D)
            g = rk @ tw[l] @ rk
            lam, vec = _eigh(g) if need else (_eigvalsh(g), None)
            if dtype == torch.float32:
                keep, s, b = _float32_spectrum(lam)
            else:
                keep = _psd_keep(lam)
                s = torch.where(keep, lam.clamp_min(0.0).sqrt(), torch.zeros_like(lam))
                b = torch.zeros(lam.shape[0], dtype=torch.bool, device=lam.device)
            sel_t = torch.tensor(sel, device=r.device)
            vals[sel_t] = s.sum(-1).to(r.dtype)
            bad[sel_t] = b
            if need:
                w = torch.where(keep, (0.5 / torch.where(keep, s, torch.ones_like(s))).sqrt(),
                                torch.zeros_like(s))
                groups.append((l, sel_t, kk, vec, w))
        ctx.mark_non_differentiable(bad)
        if need:
            ctx.save_for_backward(rw, tw)
            ctx.groups = groups
            ctx.shapes = (r.shape, t.shape, r.dtype)
        return vals, bad

    @staticmethod
    def backward(ctx, grad: Tensor, _bad: Tensor):  # type: ignore[override]
        rw, tw = ctx.saved_tensors
        r_shape, t_shape, out_dtype = ctx.shapes
        gr_all = grad.to(rw.dtype)
        grad_r = rw.new_zeros(r_shape) if ctx.needs_input_grad[0] else None
        grad_t = tw.new_zeros(t_shape) if ctx.needs_input_grad[1] else None
        d = rw.shape[-1]
        for l, sel_t, kk, vec, w in ctx.groups:
            gr = gr_all[sel_t]  # (g,)
            rk = _take(rw, kk)
            if grad_t is not None:
                y = rk @ (vec * w[:, None, :])  # (g, D, D): R Gbar R = Y Y^T
                gsz = y.shape[0]
                yc = y.permute(1, 0, 2).reshape(d, gsz * d)  # [Y_1 | ... | Y_g]
                ys = (y * gr[:, None, None]).permute(1, 0, 2).reshape(d, gsz * d)
                grad_t[l] += ys @ yc.T
            if grad_r is not None:
                gbar = (vec * w[:, None, :].square()) @ vec.mT  # (g, D, D)
                m = gbar @ rk @ tw[l]
                grad_r.index_add_(0, torch.tensor(kk, device=rw.device),
                                  (m + m.mT) * gr[:, None, None])
        return (None if grad_r is None else grad_r.to(out_dtype),
                None if grad_t is None else grad_t.to(out_dtype), None, None, None)


def _traces_cov_cov(r: Tensor, t: Tensor, ks: list[int], ls: list[int], low: bool) -> Tensor:
    """(P,) tr((R_k T_l R_k)^1/2) for the pairs (ks[p], ls[p]) of square roots R (KA, D, D)
    and covariances T (KB, D, D).

    ``low``: for values only (no gradient needed), the D x D eigenproblems run in float32
    (eigenvalues 1.5-2x faster than float64 on CPU, measured), and any pair whose float32
    spectrum fails the reliability check (:func:`_float32_spectrum`) is recomputed in float64.
    Pairs that need a gradient always run in float64: the gradient 0.5 G^-1/2 weights the
    smallest eigenvalues most, and float32 put it 1e-4 (relative) off the float64 one on
    well-conditioned test classes, against 2e-7 for the rest of the float32 pipeline.
    """
    if low and torch.is_grad_enabled() and (r.requires_grad or t.requires_grad):
        low = False
    if not low:
        return _CovCovTraces.apply(r, t, ks, ls, torch.float64)[0]
    vals, bad = _CovCovTraces.apply(r, t, ks, ls, torch.float32)
    if bool(bad.any()):
        idx = bad.nonzero()[:, 0]
        redo = _CovCovTraces.apply(r, t, [ks[p] for p in idx.tolist()],
                                   [ls[p] for p in idx.tolist()], torch.float64)[0]
        vals = vals.index_put((idx,), redo)
    return vals


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

    if small_a and small_b and upper:
        ks, ls, vals = _traces_points_points_upper(_take(a.padded(), small_a))
        if ks:
            ks = [small_a[k] for k in ks]
            ls = [small_a[l] for l in ls]
            t = t.index_put((torch.tensor(ks, device=t.device), torch.tensor(ls, device=t.device)), vals)
            done[torch.tensor(ks), torch.tensor(ls)] = True
    elif small_a and small_b:
        put(small_a, small_b, _traces_points_points(_take(a.padded(), small_a), _take(b.padded(), small_b)))
    if large_a and small_b:
        put(large_a, small_b, _traces_cov_points(_take(a.covs(), large_a), _take(b.padded(), small_b)))
    if small_a and large_b and not upper:  # with upper: the transposes of the previous block
        put(small_a, large_b, _traces_cov_points(_take(b.covs(), large_b), _take(a.padded(), small_a)).T)
    # float32 only for the cross pairs: pairs of one distribution with itself are
    # ill-conditioned enough that float32 fails the reliability check (all of them on the
    # benchmark), and trying first would only add work.
    low = a.low_precision and b.low_precision and not upper
    pairs = [(k, l) for l in large_b for k in large_a if not upper or k < l]
    if pairs:
        ks, ls = [k for k, _ in pairs], [l for _, l in pairs]
        vals = _traces_cov_cov(a.sqrts(), b.covs(), ks, ls, low)
        kt, lt = torch.tensor(ks, device=t.device), torch.tensor(ls, device=t.device)
        t = t.index_put((kt, lt), vals)
        done[torch.tensor(ks), torch.tensor(ls)] = True
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
