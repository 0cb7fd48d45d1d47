"""``transmodal bench align``: the exact-POT accuracy reference and the profile/floor report."""

import io
import math

import pytest
import torch

pytest.importorskip("ot")

from transmodal.align import _otdd  # noqa: E402
from transmodal.align.distances import otdd  # noqa: E402
from transmodal.bench.align_profile import print_profile, profile_cell  # noqa: E402
from transmodal.bench.align_speed import _cell, make_data, pot_exact  # noqa: E402


@pytest.mark.parametrize("label", [True, False])
def test_exact_pot_reference_matches_our_otdd_on_the_same_cost(label):
    xs, ys, xt, yt = make_data(60, 50, 6, 3, seed=1)
    eps = 0.05 * float(2.0 * xs.double().var(0, unbiased=False).sum())
    exact = float(pot_exact(xs, ys, xt, yt, eps, label=label))
    ours = float(otdd(xs, ys, xt, yt, label_cost=label))
    # ours: float32, L1 marginal tolerance 1e-4; exact: float64, 1e-6 (the bench's accuracy check)
    assert abs(ours - exact) <= 1e-4 * abs(exact)
    assert exact > 0


def test_exact_cell_reports_a_value_without_a_gradient():
    spec = dict(n=40, m=30, dim=4, n_classes=2, seed=0, reg=0.05, impl="exact", backward=True,
                repeats=1, warmup=False, new_batches=False)
    r = _cell(spec)
    ours = _cell({**spec, "impl": "ours"})
    assert len(r["values"]) == 1 and math.isfinite(r["values"][0])
    assert abs(r["values"][0] - ours["values"][0]) <= 1e-4 * abs(r["values"][0])


def test_profile_splits_the_call_counts_the_work_and_undoes_its_wrappers():
    before = (_otdd._sinkhorn, _otdd._gaussian_w2, torch.mm)
    # classes of ~40 points in 8 dimensions: more points than D, so the D x D eigen path runs
    r = profile_cell(dict(n=120, m=100, dim=8, n_classes=3, seed=0, reg=0.05))
    assert (_otdd._sinkhorn, _otdd._gaussian_w2, torch.mm) == before
    assert r["fwd_s"] > 0 and r["bwd_s"] > 0
    assert {"label term, forward", "Sinkhorn incl. cost fills"} <= set(r["phases"])
    assert sum(r["phases"].values()) <= r["fwd_s"] + r["bwd_s"]
    assert len(r["iters"]) == 3 and all(i >= 1 for i in r["iters"])  # st, ss, tt solves
    assert r["eig"].get("eigh_float64", 0) > 0  # pairs with a gradient need eigenvectors
    # products: cross fill 2 N M (D + 2 + Kt) at least
    assert r["mm_gflop"] * 1e9 >= 2 * 120 * 100 * (8 + 2 + 3)
    assert r["label_gflop"] * 1e9 >= 4 * 8 ** 3  # at least one D x D pair product
    assert r["floor_mm_s"] > 0 and r["floor_eig_s"] > 0
    out = io.StringIO()
    print_profile("t", r, out)
    text = out.getvalue()
    assert "| **total**" in text and "Floor at these rates" in text


def test_profile_of_the_cached_source_call_solves_two_problems():
    r = profile_cell(dict(n=90, m=30, dim=4, n_classes=3, seed=0, reg=0.05, cached_source=True))
    assert len(r["iters"]) == 2  # the source self term was solved once, before the recorded call
