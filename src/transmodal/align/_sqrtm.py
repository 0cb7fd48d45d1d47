"""Square roots of small symmetric PSD matrices, with gradients that stay finite.

The Bures-Wasserstein label term of OTDD needs tr sqrt(.) and sqrt(.) of class covariances,
which are singular whenever a class has fewer points than dimensions. Autograd through
``torch.linalg.eigh`` divides by eigenvalue gaps and is NaN there, so these functions carry
their own backward; they also keep the many small eigendecompositions on one CPU thread.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor


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


def _float32_spectrum(lam: Tensor, rel: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Square roots of a float32 spectrum (..., r) and which spectra are unreliable.

    Returns (keep, s, unreliable). A float32 eigensolver moves each eigenvalue by about
    d = eps32 x lambda_max, the same order as the float32 rounding of the features the
    matrices come from. Eigenvalues below 4 d are noise and dropped (as zeros); kept ones
    carry independent errors d / (2 sqrt(lam)) in their square roots, added in quadrature,
    and each dropped one may hide up to sqrt(5 d). Spectra whose estimate exceeds ``rel`` of
    sum(sqrt(lam)) (near-singular matrices) are to be recomputed in float64 by the caller;
    on the benchmark's 384-d classes the float32 sums were within 1e-6 of float64 (measured).
    """
    top = lam[..., -1:].clamp_min(0.0)
    d = torch.finfo(torch.float32).eps * top
    keep = lam > 4.0 * d
    s = torch.where(keep, lam.clamp_min(0.0).sqrt(), torch.zeros_like(lam))
    noise = torch.where(keep, d / (2.0 * torch.where(keep, s, torch.ones_like(s))), torch.zeros_like(s))
    est = noise.square().sum(-1).sqrt() + (~keep).sum(-1) * (5.0 * d[..., 0]).sqrt()
    return keep, s, ~(est <= rel * s.sum(-1))  # NaN-safe: NaN counts as unreliable


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
