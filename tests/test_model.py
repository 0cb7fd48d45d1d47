import math

import pytest
import torch

from transmodal.models.bodies import load_body
from transmodal.models.embedder import Embedder, plan_patches, token_grid
from transmodal.errors import CheckpointError, ConfigError
from transmodal.models.model import ModelSpec, build_model, load_model, save_model


@pytest.mark.parametrize("spatial, max_tokens", [((150,), 64), ((24,), 64), ((427,), 64),
                                                  ((8, 8), 64), ((28, 28), 64), ((5, 300), 16)])
def test_patch_plan_fits_token_budget(spatial, max_tokens):
    patch = plan_patches(spatial, max_tokens)
    grid = token_grid(spatial, patch)
    assert math.prod(grid) <= max_tokens
    assert all(g * p >= s for g, p, s in zip(grid, patch, spatial))


def test_embedder_scale_matches_body_tokens():
    emb = Embedder(3, (100,), dim=384, max_tokens=64, token_norm=1.07)
    tokens = emb(torch.randn(4, 3, 100))  # (B, S, D)
    assert tokens.shape == (4, 50, 384)
    # LayerNorm output has norm sqrt(D); the gain brings it to the body's token norm
    assert tokens.norm(dim=-1).mean().item() == pytest.approx(1.07, rel=0.02)


@pytest.mark.parametrize("family, spatial", [("bert", (40,)), ("roberta", (40,)), ("vit", (40,)),
                                             ("vit", (12, 10)), ("swin", (12, 10)), ("bert", (9, 9))])
@pytest.mark.parametrize("task, n_out", [("classification", 3), ("regression", 2), ("dense", 2)])
def test_any_body_any_task_shapes(tiny_bodies, family, spatial, task, n_out):
    spec = ModelSpec(task=task, n_outputs=n_out, in_channels=2, spatial=list(spatial),
                     body=tiny_bodies[family], max_tokens=16)
    model = build_model(spec)
    out = model(torch.randn(3, 2, *spatial))
    expected = (3, n_out, *spatial) if task == "dense" else (3, n_out)
    assert out.shape == expected
    out.sum().backward()  # gradients reach the embedder through the body
    assert model.embedder.proj.weight.grad.abs().sum() > 0


def test_swin_refuses_series(tiny_bodies):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[40],
                     body=tiny_bodies["swin"], max_tokens=16)
    with pytest.raises(ConfigError, match="Swin bodies need 2-D inputs"):
        build_model(spec)(torch.randn(2, 1, 40))


def test_unknown_body_is_clear():
    with pytest.raises(ConfigError, match="unknown body 'no-such/model'"):
        load_body("no-such/model")


def test_body_without_inputs_embeds_refused(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(hidden_sizes=[8, 8, 8, 8], embedding_size=8, depths=[1, 1, 1, 1])).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="body type 'resnet' is not supported"):
        load_body(str(tmp_path))


def test_pretrained_weights_load_and_scratch_differs(tiny_bodies):
    spec = dict(task="classification", n_outputs=2, in_channels=1, spatial=[20], body=tiny_bodies["bert"])
    a = build_model(ModelSpec(**spec, pretrained=True))
    b = build_model(ModelSpec(**spec, pretrained=True))
    c = build_model(ModelSpec(**spec, pretrained=False))
    wa = a.body.model.encoder.layer[0].attention.self.query.weight
    assert torch.equal(wa, b.body.model.encoder.layer[0].attention.self.query.weight)
    assert not torch.equal(wa, c.body.model.encoder.layer[0].attention.self.query.weight)


def test_save_load_roundtrip_identical_outputs(tiny_bodies, tmp_path):
    spec = ModelSpec(task="dense", n_outputs=1, in_channels=2, spatial=[10, 12], body=tiny_bodies["vit"])
    model = build_model(spec).eval()
    save_model(model, tmp_path, {"note": "x"})
    loaded, meta = load_model(tmp_path)
    x = torch.randn(2, 2, 10, 12)
    assert torch.equal(model(x), loaded.eval()(x))
    assert meta["note"] == "x"


def test_truncated_and_foreign_weights_rejected(tiny_bodies, tmp_path):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[20], body=tiny_bodies["bert"])
    save_model(build_model(spec), tmp_path / "a", {})
    weights = tmp_path / "a" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path / "a")
    # weights of another architecture under this model.json
    other = ModelSpec(task="classification", n_outputs=5, in_channels=1, spatial=[20], body=tiny_bodies["bert"])
    save_model(build_model(other), tmp_path / "b", {})
    weights.write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_model(tmp_path / "a")


def test_pickle_renamed_as_weights_never_unpickled(tiny_bodies, tmp_path):
    import pickle

    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[20], body=tiny_bodies["bert"])
    save_model(build_model(spec), tmp_path, {})

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("pickle was executed",))

    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_model(tmp_path)


def test_default_minilm_body_offline():
    body = load_body("minilm")
    assert body.embed_dim == 384 and body.max_tokens == 512 and len(body.blocks()) == 6
    assert body.input_token_norm() == pytest.approx(1.066, abs=0.01)


def test_cpu_copy_keeps_values_and_ties_and_is_independent(tiny_bodies):
    """cpu_copy (pickling a GPU run, merge, add_task) copies each tensor once, to the CPU."""
    from transmodal.models.model import cpu_copy

    spec = ModelSpec(task="classification", n_outputs=3, in_channels=1, spatial=[32],
                     body=tiny_bodies["bert"], max_tokens=8)
    model = build_model(spec)
    model.tied = torch.nn.Linear(2, 2)
    model.tied_too = torch.nn.Linear(2, 2)
    model.tied_too.weight = model.tied.weight
    twin = cpu_copy(model)
    assert twin.tied_too.weight is twin.tied.weight and twin.tied.weight is not model.tied.weight
    a, b = model.state_dict(), twin.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in twin.parameters()]
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(twin.parameters()))
