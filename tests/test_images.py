"""Image-folder input, ImageNet scaling, resizing and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transmodal.errors import ConfigError, DataError
from transmodal.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_normalize,
    load_image_folder,
    to_three_channels,
    to_unit_float,
)
from transmodal.models.image_input import ImageAugment, resize_batch


def _save(path: Path, size: tuple[int, int] = (16, 16), colour: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> None:
    """A flat-colour image; JPEG or PNG by suffix. size is (W, H) as Pillow wants it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, colour)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        _save(root / "cat" / f"{i}.png", colour=(250, 0, 0))
        _save(root / "dog" / f"{i}.jpg", colour=(0, 0, 250))
    _save(root / "dog" / "3.JPEG", colour=(0, 0, 250))
    return root


# --------------------------------------------------------------------------- folder reading
def test_load_folder_shapes_labels_and_values(folder: Path) -> None:
    x, y = load_image_folder(folder)
    assert x.shape == (7, 3, 16, 16) and x.dtype == np.uint8
    assert y.tolist() == ["cat"] * 3 + ["dog"] * 4
    assert x[0, :, 5, 5].tolist() == [250, 0, 0]  # PNG is lossless, channels-first
    assert abs(int(x[-1, 2, 5, 5]) - 250) <= 3 and int(x[-1, 0, 5, 5]) <= 5  # JPEG is close


def test_mixed_sizes_use_most_common_size(folder: Path) -> None:
    _save(folder / "cat" / "big.png", size=(40, 30))  # W=40, H=30
    x, _ = load_image_folder(folder)
    assert x.shape == (8, 3, 16, 16)
    x, _ = load_image_folder(folder, image_size=24)
    assert x.shape == (8, 3, 24, 24)
    assert x[0, :, 12, 12].tolist() == [250, 0, 0]  # flat colour survives bilinear resize


def test_grey_rgba_and_16bit_images_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _save(root / "a" / "grey.png", colour=(100, 100, 100), mode="L")
    _save(root / "a" / "alpha.png", colour=(10, 20, 30), mode="RGBA")
    g16 = (np.full((16, 16), 40000, dtype=np.uint16))
    (root / "b").mkdir()
    Image.fromarray(g16).save(root / "b" / "g16.png")  # mode I;16
    x, y = load_image_folder(root)
    assert x.shape == (3, 3, 16, 16)
    assert x[0, :, 0, 0].tolist() == [10, 20, 30]  # alpha.png sorts first
    assert x[1, :, 0, 0].tolist() == [100, 100, 100]
    assert x[2, :, 0, 0].tolist() == [round(40000 / 257)] * 3  # not clipped to 255
    assert y.tolist() == ["a", "a", "b"]


def test_hidden_and_other_files_are_ignored(folder: Path) -> None:
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / ".hidden_class").mkdir()
    _save(folder / ".hidden_class" / "0.png")
    (folder / "cat" / ".0.png").write_bytes(b"not an image")  # hidden, so never opened
    (folder / "cat" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="notes.txt"):
        x, y = load_image_folder(folder)
    assert x.shape[0] == 7 and sorted(set(y.tolist())) == ["cat", "dog"]


def test_error_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def test_error_path_is_a_file(tmp_path: Path) -> None:
    _save(tmp_path / "one.png")
    with pytest.raises(DataError, match="is not a folder"):
        load_image_folder(tmp_path / "one.png")


def test_error_no_class_subfolders(tmp_path: Path) -> None:
    _save(tmp_path / "root" / "a.png")
    with pytest.raises(DataError, match=r"no class sub-folders \(found 1 images"):
        load_image_folder(tmp_path / "root")


def test_error_fewer_than_two_classes(tmp_path: Path) -> None:
    _save(tmp_path / "root" / "cat" / "a.png")
    with pytest.raises(DataError, match="only one class sub-folder .'cat'.*at least 2 classes"):
        load_image_folder(tmp_path / "root")


def test_error_empty_class_folder(folder: Path) -> None:
    (folder / "emu").mkdir()
    (folder / "emu" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="class folder .*emu' has no PNG or JPEG images"):
        load_image_folder(folder)


def test_error_corrupt_image_names_the_file(folder: Path) -> None:
    (folder / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.jpg.*fix or remove"):
        load_image_folder(folder)


def test_error_bad_image_size(folder: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_image_folder(folder, image_size=0)


# --------------------------------------------------------------------------- scaling
def test_imagenet_normalize_values() -> None:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(imagenet_normalize(mean), torch.zeros(2, 3, 4, 4), atol=1e-6)
    out = imagenet_normalize(torch.ones(1, 3, 2, 2))
    expect = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(expect))
    with pytest.raises(DataError, match="3, height, width"):
        imagenet_normalize(torch.ones(1, 1, 2, 2))


def test_to_unit_float() -> None:
    x = np.array([[[[0, 255]]]], dtype=np.uint8)
    assert to_unit_float(x).tolist() == [[[[0.0, 1.0]]]]
    with pytest.raises(DataError, match="uint8 or float"):
        to_unit_float(np.array([1, 2], dtype=np.int64))


def test_to_three_channels_digits_like() -> None:
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 17, size=(5, 8, 8)).astype(np.float64)  # like load_digits().images
    out = to_three_channels(digits, max_value=16)
    assert isinstance(out, np.ndarray) and out.shape == (5, 3, 8, 8) and out.dtype == np.float32
    assert np.allclose(out[:, 0], digits / 16) and np.array_equal(out[:, 0], out[:, 2])
    t = to_three_channels(torch.from_numpy(digits[:, None]).float(), max_value=16)
    assert isinstance(t, torch.Tensor) and t.shape == (5, 3, 8, 8)
    assert to_three_channels(np.full((1, 2, 2), 255, np.uint8)).max() == 1.0
    with pytest.raises(DataError, match=r"\[0, max_value"):
        to_three_channels(-digits - 1, max_value=16)
    with pytest.raises(DataError, match="grey images shaped"):
        to_three_channels(np.zeros((2, 2, 4, 4)))


def test_resize_batch() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert resize_batch(x, 8) is x
    assert resize_batch(x, 32).shape == (2, 3, 32, 32)
    # Antialiased shrinking of a 1-pixel checkerboard gives flat grey, not a sampled pattern.
    board = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().expand(1, 1, 64, 64)
    small = resize_batch(board, 8)
    assert small.shape == (1, 1, 8, 8) and torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)
    assert resize_batch(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (6, 5)).shape == (1, 3, 6, 5)


# --------------------------------------------------------------------------- augmentation
def test_augment_identity_in_eval_and_shapes_in_train() -> None:
    aug = ImageAugment()
    x = torch.rand(4, 3, 20, 24)
    assert aug.eval()(x) is x
    aug.train()
    y = aug(x)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_augment_deterministic_under_seed() -> None:
    aug = ImageAugment().train()
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    torch.manual_seed(4)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_full_crop_is_identity_and_flip_mirrors() -> None:
    x = torch.rand(6, 3, 10, 12)
    same = ImageAugment(flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0)).train()(x)
    assert torch.allclose(same, x, atol=1e-5)
    torch.manual_seed(0)
    flipped = ImageAugment(flip=True, scale=None).train()(x)
    kinds = []
    for i in range(6):
        if torch.allclose(flipped[i], x[i], atol=1e-5):
            kinds.append("same")
        else:
            assert torch.allclose(flipped[i], x[i].flip(-1), atol=1e-5)
            kinds.append("flip")
    assert set(kinds) == {"same", "flip"}  # seed 0 gives both; each sample decides on its own


def test_augment_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="crop scale"):
        ImageAugment(scale=(0.0, 1.0))
    with pytest.raises(ConfigError, match="crop ratio"):
        ImageAugment(ratio=(2.0, 1.0))
