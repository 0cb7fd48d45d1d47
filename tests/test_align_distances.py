"""Alignment distances: OTDD against POT and closed forms, MMD and L2 against numpy."""
import math
import warnings

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

from transmodal.align import OTDDSource, l2, mmd, otdd
from transmodal.align.distances import (OTNumericalError, SinkhornConvergenceWarning,
                                        label_distances)
from transmodal.errors import ConfigError, DataError, TransmodalError

F64 = torch.float64


def _data(n=30, m=24, d=5, ks=3, kt=2, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, d, generator=g, dtype=dtype)
    ys = torch.randint(0, ks, (n,), generator=g)
    xt = torch.randn(m, d, generator=g, dtype=dtype) * 1.3 + 0.4
    yt = torch.randint(10, 10 + kt, (m,), generator=g)  # other ids: label sets are unrelated
    return xs, ys, xt, yt


def _uniform(n):
    return torch.full((n,), 1.0 / n, dtype=F64)


def _uniform_np(n):
    return np.full(n, 1.0 / n)


# ------------------------------------------------------------------------- outer OT


@pytest.mark.parametrize("reg", [2.0, 0.5])
def test_no_label_term_equals_pot_sinkhorn2(reg):
    xs, _, xt, _ = _data()
    cost = torch.cdist(xs, xt) ** 2
    ref = ot.sinkhorn2(_uniform(30), _uniform(24), cost, reg, method="sinkhorn_log",
                       stopThr=1e-13, numItermax=100_000)
    ours = otdd(xs, None, xt, None, reg=reg, reg_relative=False, label_cost=False,
                debiased=False, tol=1e-11, max_iter=100_000)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-4)


def test_float32_small_reg_absorbs_and_matches_log_domain(monkeypatch):
    """Scalings outgrow float32 at small reg: absorbed into the potentials, value still right."""
    import transmodal.align._sinkhorn as dist  # the solver (and its _kernel_) lives here

    rebuilds = []
    kernel = dist._kernel_
    monkeypatch.setattr(dist, "_kernel_", lambda *a, **k: rebuilds.append(1) or kernel(*a, **k))
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(40, 3, generator=g, dtype=F64)
    xt = torch.randn(30, 3, generator=g, dtype=F64) * 1.5 + 1
    eps = 0.01 * float(2 * xs.var(0, unbiased=False).sum())
    ref = ot.sinkhorn2(_uniform(40), _uniform(30), torch.cdist(xs, xt) ** 2, eps,
                       method="sinkhorn_log", stopThr=1e-10, numItermax=100_000)
    ours = otdd(xs.float(), None, xt.float(), None, reg=0.01, label_cost=False, debiased=False,
                tol=1e-5, max_iter=20_000)
    assert rebuilds, "the test case should need absorptions"
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_one_class_each_adds_constant_label_term():
    """One class per side: the label term is one constant W2 added to every cost entry."""
    xs, _, xt, _ = _data()
    ys, yt = torch.zeros(30, dtype=torch.long), torch.full((24,), 7)
    w = label_distances(xs, ys, xt, yt).item()
    cost = torch.cdist(xs, xt) ** 2 + w
    ref = ot.sinkhorn2(_uniform(30), _uniform(24), cost, 1.0, method="sinkhorn_log", stopThr=1e-13)
    ours = otdd(xs, ys, xt, yt, reg=1.0, reg_relative=False, debiased=False, tol=1e-11)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-4)


def test_small_reg_approaches_emd2():
    """<P, C> decreases to the exact OT cost as reg -> 0: within 1e-5 relative at reg 1e-3."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(15, 3, generator=g, dtype=F64)
    xt = torch.randn(12, 3, generator=g, dtype=F64) * 1.3 + 0.4
    exact = ot.emd2(_uniform_np(15), _uniform_np(12), (torch.cdist(xs, xt) ** 2).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)  # must converge: feasible plans
        vals = [otdd(xs, None, xt, None, reg=reg, label_cost=False, debiased=False, tol=1e-10,
                     max_iter=50_000).item() for reg in (0.05, 0.01, 0.001)]
    assert vals[0] > vals[1] > vals[2] >= exact * (1 - 1e-8)
    assert vals[1] == pytest.approx(exact, rel=1e-3)
    assert vals[2] == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("objective", ["cost", "entropic"])
def test_identical_datasets_debiased_is_zero(objective):
    xs, ys, xt, yt = _data()
    scale = otdd(xs, ys, xt, yt, objective=objective).item()
    same = otdd(xs, ys, xs.clone(), ys, objective=objective, tol=1e-5).item()
    assert scale > 1.0
    assert abs(same) < 1e-5 * scale


def test_debiased_is_positive_and_grows_with_shift():
    xs, ys, xt, yt = _data()
    near = otdd(xs, ys, xs + 0.5, ys, reg=0.2).item()
    far = otdd(xs, ys, xs + 1.5, ys, reg=0.2).item()
    assert 0 < near < far


# ------------------------------------------------------------------------ label term


def _bures_np(x1, x2):
    m1, m2 = x1.mean(0), x2.mean(0)
    s1 = np.cov(x1.T, bias=True)
    s2 = np.cov(x2.T, bias=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular: still accurate
        r1 = np.real(scipy.linalg.sqrtm(s1))
        cross = np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1))
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross))


@pytest.mark.parametrize("sizes,d,rel", [((40, 30), 5, 1e-8),  # full-rank covariances
                                         ((4, 6), 8, 1e-5)])  # singular: fewer points than dims
def test_gaussian_label_term_is_closed_form_w2(sizes, d, rel):
    g = np.random.default_rng(0)
    n1, n2 = sizes
    x1 = g.normal(size=(2 * n1, d))
    x2 = g.normal(size=(n2, d)) @ g.normal(size=(d, d)) * 0.5 + 1.0
    ys = torch.tensor([0] * n1 + [1] * n1)
    w = label_distances(torch.from_numpy(x1), ys, torch.from_numpy(x2), torch.zeros(n2, dtype=torch.long))
    assert w.shape == (2, 1)
    for k in range(2):
        expected = _bures_np(x1[k * n1:(k + 1) * n1], x2)
        assert w[k, 0].item() == pytest.approx(expected, rel=rel)
    self_w = label_distances(torch.from_numpy(x1), ys)
    assert self_w[0, 0].item() == 0 and self_w[1, 1].item() == 0
    assert self_w[0, 1].item() == pytest.approx(_bures_np(x1[:n1], x1[n1:]), rel=rel)


def _mixed_sizes(sizes, d, seed, shift=0.0):
    """Classes with fewer and with more points than dimensions (every code path)."""
    g = np.random.default_rng(seed)
    xs = [g.normal(size=(n, d)) @ g.normal(size=(d, d)) * 0.6 + g.normal(size=d) + shift for n in sizes]
    y = np.concatenate([[k] * n for k, n in enumerate(sizes)])
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(y)


def test_gaussian_label_term_mixed_class_sizes():
    d = 6
    xs, ys = _mixed_sizes([3, 10, 6, 20, 1], d, seed=1)
    xt, yt = _mixed_sizes([2, 8, 12, 5], d, seed=2, shift=0.5)
    w = label_distances(xs, ys, xt, yt)
    self_w = label_distances(xs, ys)
    for k in range(5):
        for l in range(4):
            expected = _bures_np(xs[ys == k].numpy(), xt[yt == l].numpy())
            assert w[k, l].item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
        for l in range(5):
            expected = 0.0 if k == l else _bures_np(xs[ys == k].numpy(), xs[ys == l].numpy())
            assert self_w[k, l].item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def _large_classes(n_per, d, k, seed, rank=None, shift=0.0):
    """k classes of n_per > d points (the D x D pair path); ``rank``: points in a subspace."""
    g = np.random.default_rng(seed)
    xs = []
    for _ in range(k):
        z = g.normal(size=(n_per, rank or d))
        basis = g.normal(size=(rank or d, d))
        xs.append(z @ basis * 0.7 + g.normal(size=d) + shift)
    return np.concatenate(xs), np.repeat(np.arange(k), n_per)


def test_float32_cross_pairs_of_large_classes_match_float64():
    """Float32 features: the D x D eigenproblems of cross pairs run in float32; well
    conditioned pairs stay within 1e-5 of float64, near-singular ones fall back to float64."""
    xs, ys = _large_classes(40, 12, 3, seed=5)
    xt, yt = _large_classes(30, 12, 2, seed=6, shift=0.4)
    xt_low, yt_low = _large_classes(30, 12, 2, seed=7, rank=3)  # singular: must fall back
    ys_t, yt_t, ytl_t = (torch.from_numpy(v) for v in (ys, yt, yt_low))
    for target, labels, rel in ((xt, yt_t, 1e-5), (xt_low, ytl_t, 1e-12)):
        x64, t64 = torch.from_numpy(xs), torch.from_numpy(target)
        w64 = label_distances(x64, ys_t, t64, labels)
        w32 = label_distances(x64.float().double().float(), ys_t, t64.float(), labels)
        w64_same = label_distances(x64.float().double(), ys_t, t64.float().double(), labels)
        torch.testing.assert_close(w32, w64_same, rtol=rel, atol=0.0)
        for k in range(3):
            for l in range(2):
                expected = _bures_np(xs[ys == k], target[labels.numpy() == l])
                assert w64[k, l].item() == pytest.approx(expected, rel=1e-7)


def test_otdd_float32_large_classes_matches_pot_on_the_label_augmented_cost():
    """The whole debiased OTDD on float32 features with classes above D points (float32 cross
    pairs) against POT's sinkhorn2 on costs built from the closed-form W2 in float64."""
    xs, ys = _large_classes(30, 8, 3, seed=8)
    xt, yt = _large_classes(25, 8, 2, seed=9, shift=0.5)
    ys_t, yt_t = torch.from_numpy(ys), torch.from_numpy(yt)
    x_s, x_t = torch.from_numpy(xs).float(), torch.from_numpy(xt).float()
    eps = 0.05 * float(2 * x_s.double().var(0, unbiased=False).sum())

    def w(a, ya, b, yb):
        return np.array([[0.0 if a is b and k == l else _bures_np(a[ya == k], b[yb == l])
                          for l in np.unique(yb)] for k in np.unique(ya)])

    def term(a, ya, b, yb):
        a64, b64 = torch.from_numpy(a.astype(np.float32).astype(np.float64)), \
            torch.from_numpy(b.astype(np.float32).astype(np.float64))
        cost = torch.cdist(a64, b64) ** 2 + torch.from_numpy(w(a, ya, b, yb))[ya][:, yb]
        return ot.sinkhorn2(_uniform(len(a)), _uniform(len(b)), cost, eps, method="sinkhorn",
                            stopThr=1e-7, numItermax=100_000).item()

    xs32, xt32 = xs.astype(np.float32).astype(np.float64), xt.astype(np.float32).astype(np.float64)
    ref = (term(xs32, ys, xt32, yt) - 0.5 * term(xs32, ys, xs32, ys) - 0.5 * term(xt32, yt, xt32, yt))
    ours = otdd(x_s, ys_t, x_t, yt_t, tol=1e-5)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(ref, rel=1e-4)


def test_large_pair_gradient_matches_finite_differences():
    """Hand-written backward of the D x D pairs: target classes above D points on both
    sides of the target self term (gradients through square roots and covariances)."""
    xs, ys = _large_classes(12, 4, 2, seed=10)
    xt, yt = _large_classes(9, 4, 3, seed=11, shift=0.3)
    xs, ys, yt = torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(yt)

    def fn(x):
        return otdd(xs, ys, x, yt, objective="entropic", tol=1e-13, max_iter=100_000)

    x0 = torch.from_numpy(xt)
    x = x0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(fn(x), x)
    coords = [(0, 0), (5, 1), (13, 2), (20, 3), (26, 0)]
    fd = _fd_grad(fn, x0, coords)
    torch.testing.assert_close(torch.stack([grad[i, j] for i, j in coords]), fd, rtol=1e-5, atol=1e-7)


def test_float32_large_pairs_value_close_to_float64_and_gradient_pairs_stay_float64(monkeypatch):
    """Float32 features: value-only cross pairs use float32 eigenproblems (within 1e-5 of
    their float64 fallback); pairs that need a gradient run in float64, so the gradient is
    exactly the one of the all-float64 pairs."""
    import transmodal.align._label as label_mod

    xs, ys = _large_classes(40, 12, 3, seed=12)
    xt, yt = _large_classes(30, 12, 2, seed=13, shift=0.4)
    xs, ys, yt = torch.from_numpy(xs).float(), torch.from_numpy(ys), torch.from_numpy(yt)
    spectrum = label_mod._float32_spectrum
    calls = []
    out = []
    for force_float64 in (False, True):
        if force_float64:
            monkeypatch.setattr(label_mod, "_float32_spectrum",
                                lambda lam: (*spectrum(lam)[:2], torch.ones(lam.shape[0], dtype=torch.bool)))
        else:
            monkeypatch.setattr(label_mod, "_float32_spectrum", lambda lam: calls.append(1) or spectrum(lam))
        with torch.no_grad():
            value = otdd(xs, ys, torch.from_numpy(xt).float(), yt, objective="entropic", tol=1e-6).item()
        x = torch.from_numpy(xt).float().requires_grad_()
        val = otdd(xs, ys, x, yt, objective="entropic", tol=1e-6)
        val.backward()
        out.append((value, val.item(), x.grad))
    assert calls, "the value-only cross pairs should take the float32 path"
    (v32, vg32, g32), (v64, vg64, g64) = out
    assert v32 == pytest.approx(v64, rel=1e-5)
    assert vg32 == vg64 and torch.equal(g32, g64)


def test_symmetric_cost_fill_equals_the_full_product(monkeypatch):
    import transmodal.align._otdd as otdd_mod

    monkeypatch.setattr(otdd_mod, "_SYM_BLOCK", 7)  # several blocks and a ragged last one
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=g, dtype=F64)
    sq = (x * x).sum(1)[:, None]
    left = torch.cat([-2 * x, sq, torch.ones_like(sq)], 1)
    right = torch.cat([x, torch.ones_like(sq), sq], 1)
    out = torch.empty(30, 30, dtype=F64)
    otdd_mod._fill_symmetric(left, right, out)
    torch.testing.assert_close(out, left @ right.T)
    assert torch.equal(out[7:, :7], out[:7, 7:].T)


def test_exact_label_term_matches_emd2():
    xs, ys, xt, yt = _data(n=24, m=18)
    w = label_distances(xs, ys, xt, yt, inner="exact")
    for k, cs in enumerate(torch.unique(ys)):
        for l, ct in enumerate(torch.unique(yt)):
            a, b = xs[ys == cs], xt[yt == ct]
            expected = ot.emd2(_uniform_np(len(a)), _uniform_np(len(b)), (torch.cdist(a, b) ** 2).numpy())
            assert w[k, l].item() == pytest.approx(expected, rel=1e-10)


def test_exact_inner_otdd_runs_and_is_zero_on_identical():
    xs, ys, xt, yt = _data(n=24, m=18)
    assert otdd(xs, ys, xt, yt, inner="exact").item() > 0
    assert abs(otdd(xs, ys, xs.clone(), ys, inner="exact", tol=1e-6, max_iter=5000).item()) < 1e-4


# -------------------------------------------------------------------------- gradient


def _fd_grad(fn, x, coords, h=1e-5):
    out = []
    for i, j in coords:
        e = torch.zeros_like(x)
        e[i, j] = h
        out.append((fn(x + e).item() - fn(x - e).item()) / (2 * h))
    return torch.tensor(out, dtype=x.dtype)


@pytest.mark.parametrize("inner,mixed", [("gaussian", False), ("gaussian", True), ("exact", False)])
def test_gradient_matches_finite_differences(inner, mixed):
    """The envelope gradient is the exact gradient of the entropic objective."""
    xs, ys, xt, yt = _data(n=20, m=16, d=4)
    if mixed:  # classes below and above D points, singular covariances included
        xs, ys = _mixed_sizes([3, 9, 6], 6, seed=3)
        xt, yt = _mixed_sizes([2, 10, 4], 6, seed=4, shift=0.3)

    def fn(x):
        return otdd(xs, ys, x, yt, objective="entropic", inner=inner, tol=1e-13, max_iter=100_000)

    x = xt.clone().requires_grad_()
    (grad,) = torch.autograd.grad(fn(x), x)
    coords = [(0, 0), (3, 1), (7, 2), (15, 3), (9, 0)]
    fd = _fd_grad(fn, xt, coords)
    ours = torch.stack([grad[i, j] for i, j in coords])
    torch.testing.assert_close(ours, fd, rtol=1e-5, atol=1e-7)


def test_cost_objective_uses_the_entropic_gradient():
    xs, ys, xt, yt = _data()
    grads = []
    for objective in ("cost", "entropic"):
        x = xt.clone().requires_grad_()
        otdd(xs, ys, x, yt, objective=objective, tol=1e-12).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_gradient_finite_for_singular_class_covariances_float32():
    """Classes with fewer points than dimensions: eigh autograd would give NaN here."""
    xs, ys, xt, yt = _data(n=40, m=20, d=16, ks=4, kt=4, dtype=torch.float32)
    x = xt.clone().requires_grad_()
    val = otdd(xs, ys, x, yt)
    val.backward()
    assert val.dtype == torch.float32 and torch.isfinite(val)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_half_precision_input_computes_in_float32():
    xs, ys, xt, yt = _data(dtype=torch.float32)
    x = xt.to(torch.bfloat16).requires_grad_()
    val = otdd(xs.to(torch.bfloat16), ys, x, yt)
    val.backward()
    assert val.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    assert val.item() == pytest.approx(otdd(xs, ys, xt, yt).item(), rel=0.05)


# -------------------------------------------------------------------- OTDDSource


@pytest.mark.parametrize("inner", ["gaussian", "exact"])
def test_source_path_equals_plain_path(inner):
    xs, ys, xt, yt = _data()
    source = OTDDSource(xs, ys, inner=inner)
    for batch in range(2):
        x_plain = (xt + batch).requires_grad_()
        x_src = (xt + batch).requires_grad_()
        plain = otdd(xs, ys, x_plain, yt, inner=inner)
        cached = otdd(None, None, x_src, yt, source=source)
        plain.backward()
        cached.backward()
        assert cached.item() == pytest.approx(plain.item(), rel=1e-12)
        torch.testing.assert_close(x_src.grad, x_plain.grad)


def test_source_options_clash_raises():
    xs, ys, xt, yt = _data()
    source = OTDDSource(xs, ys, reg=0.1)
    with pytest.raises(ConfigError, match="reg"):
        otdd(None, None, xt, yt, source=source, reg=0.2)
    with pytest.raises(ConfigError, match="either"):
        otdd(xs.clone(), ys, xt, yt, source=source)
    same = otdd(xs, ys, xt, yt, source=source, reg=0.1).item()  # the same tensors are fine
    assert same == otdd(None, None, xt, yt, source=source).item() > 0


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("where", ["xs", "xt"])
def test_nan_input_raises_clear_error(where):
    xs, ys, xt, yt = _data()
    (xs if where == "xs" else xt)[2, 1] = float("nan")
    with pytest.raises(DataError, match=f"{where} contains NaN") as info:
        otdd(xs, ys, xt, yt)
    assert isinstance(info.value, (TransmodalError, ValueError))
    with pytest.raises(DataError):
        mmd(xs, xt)


def test_overflowing_cost_raises_numerical_error():
    """Finite features whose squared distances overflow float64."""
    xs, _, xt, _ = _data()
    with pytest.raises(OTNumericalError, match="NaN/inf"):
        otdd(xs * 1e160, None, xt * 1e160, None, reg=1.0, reg_relative=False,
             label_cost=False, debiased=False)


def test_non_convergence_warns():
    xs, _, xt, _ = _data()
    with pytest.warns(SinkhornConvergenceWarning):
        otdd(xs, None, xt, None, label_cost=False, reg=0.001, max_iter=3, tol=1e-12)


# ---------------------------------------------------------------------- MMD and L2


def _mmd_np(x, y, hs, unbiased=False):
    def k(a, b):
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d / h) for h in hs)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if unbiased:
        n, m = len(x), len(y)
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def test_mmd_zero_on_identical_and_grows_with_shift():
    xs, _, _, _ = _data()
    assert abs(mmd(xs, xs.clone()).item()) < 1e-12
    small, large = mmd(xs, xs + 0.2).item(), mmd(xs, xs + 1.0).item()
    assert 0 < small < large


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_numpy(unbiased):
    xs, _, xt, _ = _data()
    x, y = xs.numpy(), xt.numpy()
    pooled = np.concatenate([x, y])
    d = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    med = np.median(d[np.triu_indices(len(pooled), 1)])
    hs = [med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert mmd(xs, xt, unbiased=unbiased).item() == pytest.approx(_mmd_np(x, y, hs, unbiased), rel=1e-10)
    assert mmd(xs, xt, bandwidths=[3.0]).item() == pytest.approx(_mmd_np(x, y, [3.0]), rel=1e-10)


def test_mmd_source_cache_equals_plain_mmd_with_source_bandwidths():
    from transmodal.align import MMDSource

    xs, _, xt, _ = _data()
    x = xs.numpy()
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    med = np.median(d[np.triu_indices(len(x), 1)])  # bandwidths from the source alone
    src = MMDSource(xs)
    assert src.bandwidths == pytest.approx([med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)], rel=1e-12)
    xt = xt.clone().requires_grad_(True)
    value = src.distance(xt)
    assert value.item() == pytest.approx(_mmd_np(x, xt.detach().numpy(), src.bandwidths), rel=1e-10)
    (grad,) = torch.autograd.grad(value, xt)
    xt2 = xt.detach().clone().requires_grad_(True)
    (grad2,) = torch.autograd.grad(mmd(xs, xt2, bandwidths=src.bandwidths), xt2)
    assert torch.allclose(grad, grad2, rtol=1e-10, atol=1e-14)
    with pytest.raises(DataError, match="features"):
        src.distance(xt.detach()[:, :3])


def test_l2_matches_numpy_and_differentiates():
    xs, _, xt, _ = _data()
    x, y = xs.numpy(), xt.numpy()
    std_x, std_y = np.sqrt(x.var(0) + 1e-12), np.sqrt(y.var(0) + 1e-12)
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + ((std_x - std_y) ** 2).sum()
    xt = xt.clone().requires_grad_()
    val = l2(xs, xt)
    assert val.item() == pytest.approx(expected, rel=1e-12)
    val.backward()
    assert torch.isfinite(xt.grad).all()
    assert l2(xs, xs.clone()).item() == pytest.approx(0.0, abs=1e-20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    xs, ys, xt, yt = _data()
    source = OTDDSource(xs.cuda(), ys.cuda())
    x = xt.cuda().requires_grad_()
    val = otdd(None, None, x, yt.cuda(), source=source)
    val.backward()
    assert val.item() == pytest.approx(otdd(xs, ys, xt, yt).item(), rel=1e-6)
    assert math.isfinite(x.grad.sum().item())
