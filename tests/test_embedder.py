"""--embedder patch|overlap|conv (models/embedder.py)."""

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


@pytest.mark.parametrize("spatial", [(427,), (150,), (64,), (5,), (28, 28), (30, 17)])
@pytest.mark.parametrize("kind", EMBEDDERS)
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
