"""--embedder patch|overlap|conv|rocket (models/embedder.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.config import FitConfig
from transmodal.errors import ConfigError
from transmodal.models.embedder import EMBEDDERS, Embedder
from transmodal.models.model import ModelSpec


@pytest.mark.parametrize("kind, spatial", [
    (kind, spatial) for kind in EMBEDDERS
    for spatial in [(427,), (150,), (64,), (5,), (28, 28), (30, 17)]
    if kind != "rocket" or len(spatial) == 1])  # rocket is for series (fields: refused, below)
def test_same_token_grid_as_patch_and_the_token_scale_rule(kind, spatial):
    torch.manual_seed(0)
    patch = Embedder(2, spatial, 32, 64, token_norm=3.0)
    e = Embedder(2, spatial, 32, 64, token_norm=3.0, kind=kind)
    assert e.grid == patch.grid and e.patch == patch.patch
    tokens = e(torch.randn(3, 2, *spatial))
    assert tokens.shape == (3, math.prod(patch.grid), 32)
    # LayerNorm last, gain = token norm / sqrt(D): every token has the body's token norm
    torch.testing.assert_close(tokens.norm(dim=-1), torch.full(tokens.shape[:2], 3.0), rtol=1e-3, atol=1e-3)
    assert e.layout()["embedder"] == kind


def test_overlap_tokens_see_half_of_each_neighbour():
    torch.manual_seed(0)
    length = 80  # 16 tokens of patch 5
    for kind, sees in (("patch", False), ("overlap", True)):
        e = Embedder(1, (length,), 16, 16, token_norm=1.0, kind=kind)
        assert e.patch == (5,)
        x = torch.randn(1, 1, length)
        bumped = x.clone()
        bumped[..., 5 * 4 + 6] += 5.0  # inside patch 4's neighbour (patch 5), close to patch 4
        diff = (e(bumped) - e(x)).abs().sum(-1)[0]  # (S,)
        assert diff[5] > 0 and (diff[4] > 0) == sees
        far = x.clone()
        far[..., 5 * 8 + 2] += 5.0  # the middle of patch 8: never seen by token 4
        assert (e(far) - e(x)).abs().sum(-1)[0, 4] == 0


def test_conv_embedder_fit_save_load_round_trip(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    out = tmp_path / "run"
    run = transmodal.fit((x, y), out=out, body=tiny_bodies["bert"], embedder="conv", epochs=1,
                         batch_size=8, max_tokens=16, device="cpu", progress=False)
    assert run.summary["embedder"] == "conv" and run.summary["tokens"] == 16
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["spec"]["embedder"] == "conv"
    loaded = transmodal.load(out)
    assert loaded.model.embedder.kind == "conv"
    np.testing.assert_array_equal(loaded.predict_proba(x), run.predict_proba(x))


def test_rocket_features_are_fitted_on_the_training_inputs_and_seeded():
    """Biases are quantiles of a training series' kernel outputs, the features are standardised
    over the training steps, and the same seed gives the same embedder and tokens."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2, 100)).astype(np.float32)

    def fitted(seed: int) -> Embedder:
        torch.manual_seed(seed)
        e = Embedder(2, (100,), 32, 16, token_norm=1.0, kind="rocket")
        e.fit_inputs(x)
        return e

    e = fitted(0)
    assert e.rocket.dilations == [1, 2, 4, 6, 8, 12]  # spans 8 x dilation <= 99 steps
    assert e.rocket.bias.abs().sum() > 0  # fitted, not the zeros it was built with
    feats = e._rocket_patches(torch.from_numpy(x)).flatten(0, 1)  # (N * S, F)
    assert feats.min() >= 0 and feats.max() <= 1  # shares of steps above a bias
    z = (feats - e.rocket_mean) / e.rocket_std
    assert z.mean(0).abs().max() < 1e-4 and ((z.std(0) - 1).abs() < 1e-3).float().mean() > 0.9
    again, other = fitted(0), fitted(1)
    for name, value in e.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)
    assert not torch.equal(other.rocket.bias, e.rocket.bias)
    xt = torch.from_numpy(x[:4])
    torch.testing.assert_close(again(xt), e(xt), rtol=0, atol=0)
    # a step change far from a token's patch reaches it through the dilated kernels only
    patch = Embedder(2, (100,), 32, 16, token_norm=1.0)
    bumped = xt.clone()
    bumped[..., 40:] += 3.0  # token 0 holds steps 0-6; dilation 12 reaches 48 steps
    assert (patch(bumped) - patch(xt)).abs().sum(-1)[:, 0].max() == 0
    assert (e(bumped) - e(xt)).abs().sum(-1)[:, 0].min() > 0


def test_rocket_fit_uses_training_inputs_only_and_round_trips(tiny_bodies, toy_series, tmp_path,
                                                              monkeypatch):
    x, y = toy_series
    seen = []
    original = Embedder.fit_inputs
    monkeypatch.setattr(Embedder, "fit_inputs",
                        lambda self, inputs: (seen.append(np.asarray(inputs).copy()),
                                              original(self, inputs))[1])
    out = tmp_path / "run"
    run = transmodal.fit((x[:30], y[:30]), test_data=(x[30:], y[30:]), out=out,
                         body=tiny_bodies["bert"], embedder="rocket", epochs=1, batch_size=8,
                         max_tokens=16, device="cpu", progress=False)
    assert len(seen) == 1 and len(seen[0]) == run.summary["n_train"] == 24  # not the 6 validation
    test_rows = {r.tobytes() for r in x[30:]}
    assert not any(r.tobytes() in test_rows for r in seen[0].astype(x.dtype))
    assert run.summary["embedder"] == "rocket"
    loaded = transmodal.load(out)  # biases and standardisation come back with the weights
    assert loaded.model.embedder.rocket.bias.abs().sum() > 0
    np.testing.assert_array_equal(loaded.predict_proba(x), run.predict_proba(x))
    assert len(seen) == 1  # loading fits nothing
    # --tune lora stores adapters, embedder and head only: the embedder's buffers come back too
    lora = transmodal.fit((x[:30], y[:30]), out=tmp_path / "lora", body=tiny_bodies["bert"],
                          embedder="rocket", tune="lora", epochs=1, batch_size=8, max_tokens=16,
                          device="cpu", progress=False, baselines="none")
    np.testing.assert_array_equal(transmodal.load(tmp_path / "lora").predict_proba(x),
                                  lora.predict_proba(x))


def test_rocket_refused_on_fields_with_one_line(capsys, tmp_path):
    with pytest.raises(ConfigError, match="--embedder rocket is for series") as e:
        Embedder(1, (28, 28), 32, 16, token_norm=1.0, kind="rocket")
    assert "\n" not in str(e.value)
    data = tmp_path / "fields.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.normal(size=(12, 1, 8, 8)), y_train=np.arange(12) % 2)
    assert main(["fit", "--data", str(data), "--embedder", "rocket", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--embedder rocket is for series" in err[0]
    assert not (tmp_path / "r").exists()


def test_old_model_json_without_the_field_is_patch():
    spec = ModelSpec.from_dict({"task": "classification", "n_outputs": 2, "in_channels": 1,
                                "spatial": [30]})
    assert spec.embedder == "patch"


@pytest.mark.parametrize("options, message", [
    ({"embedder": "fancy"}, "unknown --embedder 'fancy'"),
    ({"embedder": "conv", "body": "efficientnet-lite0"}, "takes images directly"),
])
def test_bad_embedder_refused(options, message):
    with pytest.raises(ConfigError, match=message) as e:
        FitConfig(**options)
    assert "\n" not in str(e.value)


def test_cli_bad_embedder_exit_2_one_line(capsys, tmp_path):
    assert main(["fit", "--data", "ucr:GunPoint", "--embedder", "fancy", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown --embedder 'fancy'" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("spatial, table, body, want", [
    ((150,), False, "minilm", "rocket"),  # a series longer than the 64-token cap
    ((64,), False, "minilm", "patch"),  # one step per token: the patch already sees each step
    ((24,), False, "minilm", "patch"),
    ((150,), True, "minilm", "patch"),  # table columns: their order means nothing
    ((28, 28), False, "minilm", "patch"),  # fields and images
    ((150,), False, "efficientnet-lite0", "patch"),  # pixel bodies have no embedder
])
def test_the_task_chooses_the_embedder(spatial, table, body, want):
    from transmodal.tasks import get_task

    for task in ("classification", "regression", "dense", "contrastive"):
        cfg = get_task(task).with_defaults(FitConfig(body=body, max_tokens=64), spatial, table=table)
        # rocket is measured better for classes only (dense: worse; the others: not measured)
        assert cfg.embedder == (want if task == "classification" else "patch")
        given = get_task(task).with_defaults(FitConfig(embedder="overlap"), spatial, table=table)
        assert given.embedder == "overlap"  # a given --embedder is kept


def test_config_yaml_records_the_chosen_embedder_and_old_runs_resume_with_patch(
        tiny_bodies, toy_series, tmp_path, monkeypatch):
    import yaml

    from transmodal.run.checkpoint import Checkpointer
    from transmodal.run.fit import resume_config

    x, y = toy_series  # 48 steps > 16 tokens: rocket
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    run = tmp_path / "r"
    fitted = transmodal.fit(str(tmp_path / "d.npz"), out=run, body=tiny_bodies["bert"], epochs=1, batch_size=8,
                            max_tokens=16, progress=False, baselines="none")
    assert fitted.summary["embedder"] == "rocket"
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["embedder"] == "rocket"
    (run / "summary.json").unlink()  # as if stopped after a checkpoint (only the config is read)
    monkeypatch.setattr(Checkpointer, "load", lambda self: {"stage": "refine"})
    assert resume_config(run, None, None, None, False, {})[0].embedder == "rocket"
    del stored["embedder"]  # a run written before --embedder existed trained patch tokens
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    assert resume_config(run, None, None, None, False, {})[0].embedder == "patch"


def test_a_table_keeps_patch_tokens(tiny_bodies, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 20)), columns=[f"f{i}" for i in range(20)])
    frame["label"] = np.array([0, 1] * 20)
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = transmodal.fit(str(tmp_path / "t.csv"), label_column="label", body=tiny_bodies["bert"],
                         epochs=1, batch_size=8, max_tokens=8, progress=False, baselines="none")
    assert run.summary["patch"] == [3] and run.summary["embedder"] == "patch"  # 20 columns > 8
