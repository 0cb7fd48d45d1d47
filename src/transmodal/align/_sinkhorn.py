"""The entropic OT solver behind :func:`~transmodal.align.distances.otdd`.

Stabilised scaling-form Sinkhorn between uniform weights on a cost that the caller writes
into the one (N, M) buffer (:func:`_sinkhorn`), the plan it returns (:class:`_Plan`), its
convergence and non-finite checks (:class:`OTNumericalError`,
:class:`SinkhornConvergenceWarning`), and the transport cost and entropic value read off the
plan without the cost matrix. Kept apart from OTDD because it knows nothing of labels or
datasets: only a cost, eps and the stopping rule.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from transmodal.errors import ConfigError, TransmodalError


class OTNumericalError(TransmodalError):
    """Sinkhorn produced NaN or inf: the regularisation is too small for the cost scale."""


class SinkhornConvergenceWarning(UserWarning):
    """Sinkhorn stopped at ``max_iter`` with the marginal error above ``tol``."""


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


def _check_every(check_every: int | None, device: torch.device) -> int:
    """Every iteration on CPU (the error is nearly free there); every 10 on accelerators,
    where reading it back synchronises the device."""
    if check_every is None:
        return 1 if device.type == "cpu" else 10
    if not (isinstance(check_every, int) and check_every >= 1):
        raise ConfigError(f"check_every must be an integer >= 1, got {check_every!r}")
    return check_every
