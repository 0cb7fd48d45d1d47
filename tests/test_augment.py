"""--augment: named transforms of training batches (engine/augment.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import transmodal
from transmodal.cli import main
from transmodal.config import FitConfig
from transmodal.engine import augment as aug
from transmodal.engine.augment import BatchAugment, mixed_loss, parse_augment
from transmodal.errors import ConfigError

FAST = dict(batch_size=8, max_tokens=16, device="cpu", progress=False)
PER_SAMPLE = ("time-warp", "window-slice", "magnitude-warp", "scaling", "jitter")


def batch(spatial: tuple[int, ...], fields: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 2, *spatial, generator=g)  # (B, C, *S)
    y = torch.randn(6, 1, *spatial, generator=g) if fields else torch.tensor([0, 1, 2, 0, 1, 2])
    return x, y


@pytest.mark.parametrize("spatial", [(40,), (12, 10)])
@pytest.mark.parametrize("name", aug.SERIES_TRANSFORMS)
def test_each_transform_keeps_shape_dtype_and_is_seeded(name, spatial):
    x, y = batch(spatial)
    out = [BatchAugment(name, "labels", "cpu", seed)(x, y) for seed in (0, 0, 1)]
    for xo, yo, _ in out:
        assert xo.shape == x.shape and xo.dtype == x.dtype and torch.equal(yo, y)
        assert torch.isfinite(xo).all()
    assert torch.equal(out[0][0], out[1][0])  # same seed, same batch
    assert not torch.equal(out[0][0], out[2][0])  # another seed, another batch
    assert not torch.equal(out[0][0], x)  # it did something


def test_transform_sizes_are_what_the_docs_say():
    x = torch.zeros(4000, 1, 50)
    noise = BatchAugment("jitter", "labels", "cpu", 0)(x, torch.zeros(4000))[0]
    assert abs(noise.std().item() - aug.JITTER_SIGMA) < 0.002
    ones = torch.ones(4000, 3, 20)
    scaled = BatchAugment("scaling", "labels", "cpu", 0)(ones, torch.zeros(4000))[0]
    assert torch.equal(scaled, scaled[:, :, :1].expand_as(scaled))  # one factor per sample, channel
    assert abs(scaled.std().item() - aug.SCALING_SIGMA) < 0.01
    ramp = torch.linspace(0, 1, 101).expand(3, 1, 101)  # window-slice keeps 90% of the axis
    sliced = BatchAugment("window-slice", "labels", "cpu", 0)(ramp, torch.zeros(3))[0]
    span = sliced[:, 0, -1] - sliced[:, 0, 0]
    assert torch.allclose(span, torch.full((3,), aug.WINDOW), atol=1e-5)
    warped = BatchAugment("time-warp", "labels", "cpu", 0)(ramp, torch.zeros(3))[0]
    assert (warped.diff(dim=-1) >= -1e-6).all()  # monotone resampling of a ramp stays monotone
    assert torch.allclose(warped[..., [0, -1]], ramp[..., [0, -1]], atol=1e-5)  # ends kept


def test_mixup_mixes_inputs_and_its_loss_is_the_lam_weighted_sum():
    x, y = batch((30,))
    xo, yo, mix = BatchAugment("mixup", "labels", "cpu", 3)(x, y)
    perm, lam = mix
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(xo, lam * x + (1 - lam) * x[perm])
    out = torch.randn(6, 3)
    by_hand = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])
    from transmodal.tasks import get_task

    task = get_task("classification")
    torch.testing.assert_close(mixed_loss(task.loss, out, yo, [], mix), by_hand)
    w = torch.rand(6) + 0.5  # per-sample weights follow their samples
    by_hand_w = (lam * (F.cross_entropy(out, y, reduction="none") * w).mean()
                 + (1 - lam) * (F.cross_entropy(out, y[perm], reduction="none") * w[perm]).mean())
    torch.testing.assert_close(mixed_loss(task.loss, out, yo, [w], mix), by_hand_w)


def test_mixup_lam_follows_beta_02():
    x, y = batch((8,))
    a = BatchAugment("mixup", "labels", "cpu", 0)
    lams = np.array([a(x, y)[2][1] for _ in range(2000)])
    assert abs(lams.mean() - 0.5) < 0.03
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.5  # Beta(0.2, 0.2) is U-shaped


def test_cutmix_pastes_one_segment_and_weights_the_loss_by_its_share():
    x, y = batch((40,))
    xo, _, (perm, lam) = BatchAugment("cutmix", "labels", "cpu", 5)(x, y)
    pasted = (xo != x).any(dim=(0, 1))  # (L,) positions taken from the other sample
    inside = xo[..., pasted]
    assert torch.equal(inside, x[perm][..., pasted])
    idx = pasted.nonzero().flatten()
    assert len(idx) == 0 or (idx.diff() == 1).all()  # one contiguous segment
    assert lam == pytest.approx(1 - pasted.sum().item() / 40)


@pytest.mark.parametrize("name", ["roll", "time-warp", "window-slice", "mixup", "cutmix"])
@pytest.mark.parametrize("spatial", [(32,), (9, 11)])
def test_geometric_transforms_move_a_field_target_alike(name, spatial):
    x, _ = batch(spatial)
    xo, yo, mix = BatchAugment(name, "fields", "cpu", 2)(x, x.clone())  # target = input
    assert mix is None and yo.shape == x.shape
    torch.testing.assert_close(yo, xo)  # the same draw moved both
    xo2, yo2, _ = BatchAugment("jitter", "fields", "cpu", 2)(x, x.clone())
    assert torch.equal(yo2, x) and not torch.equal(xo2, x)  # noise on the input only


@pytest.mark.parametrize("spatial", [(32,), (9, 11)])
def test_roll_is_an_exact_circular_shift_per_sample(spatial):
    """Every sample is its own torch.roll (no interpolation), the shifts differ between
    samples, and a field target gets the same shift."""
    x, _ = batch(spatial)
    y = -2 * x[:, :1]
    xo, yo, _ = BatchAugment("roll", "fields", "cpu", 3)(x, y)
    dims = tuple(range(1, 1 + len(spatial)))
    shifts = []
    for xi, xoi, yoi, yi in zip(x, xo, yo, y):
        found = [s for s in np.ndindex(*spatial)
                 if torch.equal(torch.roll(xi, tuple(-v for v in s), dims), xoi)]
        assert len(found) == 1  # exactly one shift reproduces the sample
        assert torch.equal(torch.roll(yi, tuple(-v for v in found[0]), dims), yoi)
        shifts.append(found[0])
    assert len(set(shifts)) > 1


def test_roll_on_a_dense_fit_is_seeded_and_saved(tiny_bodies, tmp_path):
    """A dense fit with --augment roll: the same seed gives the same model, the run folder
    predicts what the fitted run predicts, and it differs from a fit without it."""
    g = np.random.default_rng(0)
    x = g.standard_normal((40, 1, 32)).astype(np.float32)
    y = (x + np.roll(x, 1, axis=2)).astype(np.float32)  # a periodic, shift-equivariant map
    opts = dict(task="dense", body=tiny_bodies["bert"], epochs=2, seed=0, **FAST)
    run = transmodal.fit((x, y), out=tmp_path / "run", augment="roll", **opts)
    pred = run.predict(x)
    assert pred.shape == y.shape
    assert np.array_equal(pred, transmodal.fit((x, y), augment="roll", **opts).predict(x))
    assert np.array_equal(pred, transmodal.load(tmp_path / "run").predict(x))
    assert not np.array_equal(pred, transmodal.fit((x, y), augment="none", **opts).predict(x))


def test_parse_normalises_order_and_old_booleans():
    assert parse_augment("jitter, time-warp") == "time-warp,jitter"  # application order
    assert parse_augment("jitter,roll") == "roll,jitter"
    assert parse_augment(True) == "flip-crop" and parse_augment(False) == "none"
    assert parse_augment(None) == "none" and parse_augment("none") == "none"
    # an old config.yaml / estimator param: augment true|false
    assert FitConfig.from_dict({"body": "efficientnet-lite0", "augment": True}).augment == "flip-crop"
    assert FitConfig.from_dict({"augment": False}).augment == "none"
    assert FitConfig(augment="scaling,jitter").augment == "scaling,jitter"


@pytest.mark.parametrize("options, message", [
    ({"augment": "wobble"}, "unknown --augment 'wobble'"),
    ({"augment": "jitter,jitter"}, "names 'jitter' twice"),
    ({"augment": "none,jitter"}, "cannot be combined"),
    ({"augment": "flip-crop"}, "image transforms apply to CNN image bodies"),
    ({"augment": "jitter", "body": "efficientnet-lite0"}, "transforms series and fields"),
    ({"augment": 3}, "comma"),
])
def test_bad_values_refused(options, message):
    with pytest.raises(ConfigError, match=message) as e:
        FitConfig(**options)
    assert "\n" not in str(e.value)


def test_cli_bad_augment_exit_2_one_line(capsys, tmp_path):
    assert main(["fit", "--data", "ucr:GunPoint", "--augment", "jitter,wobble",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown --augment 'wobble'" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("task, augment, message", [
    ("regression", "scaling", "regression allows jitter only"),
    ("regression", "mixup", "regression allows jitter only"),
    ("regression", "roll", "regression allows jitter only"),
    ("dense", "magnitude-warp", "dense tasks allow"),
])
def test_task_refuses_transforms_that_break_its_targets(tiny_bodies, toy_series, tmp_path, task,
                                                        augment, message):
    x, _ = toy_series
    y = x.sum(axis=1) if task == "regression" else np.cumsum(x, axis=1)
    with pytest.raises(ConfigError, match=message) as e:
        transmodal.fit((x, y), out=tmp_path / "run", task=task, body=tiny_bodies["bert"],
                       augment=augment, epochs=1, **FAST)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_contrastive_refuses_mixes():
    class Contrastive:
        name, augment_targets = "contrastive", "texts"

    aug.check_task("jitter,time-warp", Contrastive())
    with pytest.raises(ConfigError, match="contrastive loss couples"):
        aug.check_task("cutmix", Contrastive())


def test_training_batches_only_and_seeded_fit(tiny_bodies, toy_series, monkeypatch, tmp_path):
    """Called once per training batch (never in validation or prediction); a fit with
    augmentation is reproducible and differs from one without."""
    x, y = toy_series
    calls = []
    original = BatchAugment.__call__
    monkeypatch.setattr(BatchAugment, "__call__",
                        lambda self, xb, yb: calls.append(len(xb)) or original(self, xb, yb))
    opts = dict(body=tiny_bodies["bert"], epochs=2, seed=1, **FAST)
    out = tmp_path / "run"
    run = transmodal.fit((x, y), out=out, augment="time-warp,jitter,mixup", **opts)
    n_train = run.summary["n_train"]
    assert sum(calls) == 2 * n_train and len(calls) == 2 * -(-n_train // 8)
    calls.clear()
    pred = run.predict_proba(x)
    assert calls == [] and np.array_equal(pred, run.predict_proba(x))
    assert np.array_equal(pred, transmodal.load(out).predict_proba(x)) and calls == []
    again = transmodal.fit((x, y), augment="time-warp,jitter,mixup", **opts)
    plain = transmodal.fit((x, y), augment="none", **opts)
    assert np.array_equal(pred, again.predict_proba(x))
    assert not np.array_equal(pred, plain.predict_proba(x))
    assert "augment: time-warp,jitter,mixup" in (out / "config.yaml").read_text()
    assert json.loads((out / "model" / "model.json").read_text())["spec"]["augment"] is False
