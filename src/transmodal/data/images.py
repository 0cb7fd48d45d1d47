"""Images as data: image folders, and pixel scaling to what ImageNet bodies expect.

Resizing and augmentation run inside the model, batch by batch (``models/image_input.py``).

Conventions used throughout transmodal for images:

- arrays on disk/in memory are channels-first, (N, 3, H, W);
- ``load_image_folder`` returns **uint8** pixels 0..255 (4x smaller than float32, which matters for
  a few thousand photos); ``to_unit_float`` turns that into float32 in [0, 1];
- grey scientific images go through ``to_three_channels`` (float32 in [0, 1], channel replicated);
- bodies take ``imagenet_normalize``-d float input.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_normalize",
    "load_image_folder",
    "to_three_channels",
    "to_unit_float",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})


# --------------------------------------------------------------------------- image folders
def _visible(entries: list[Path]) -> list[Path]:
    """Drop hidden files/folders (.DS_Store, .ipynb_checkpoints, ...), sorted by name."""
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _read_rgb(path: Path) -> np.ndarray:
    """One image file -> (H, W, 3) uint8, or DataError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            # Phones store portrait JPEGs sideways plus an EXIF flag; apply it so the pixels are
            # what a viewer shows.
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                # 16-bit grey (microscopy, scans). Pillow's convert("RGB") would clip at 255 and
                # turn almost every pixel white, so scale the full 0..65535 range to 0..255.
                a = np.asarray(im).astype(np.int64)  # (H, W)
                if a.min() < 0 or a.max() > 65535:
                    raise DataError(
                        f"image '{path}' holds 32-bit integers outside 0..65535; "
                        "save it as an 8- or 16-bit PNG"
                    )
                g = np.round(a / 257.0).astype(np.uint8)
                return np.repeat(g[:, :, None], 3, axis=2)
            if im.mode == "F":
                raise DataError(f"image '{path}' holds floating-point pixels; save it as an 8- or 16-bit PNG")
            # RGBA/LA: the alpha channel is dropped (transparent pixels keep their stored colour).
            return np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read image '{path}' ({reason}); fix or remove the file") from e


def _resize_rgb(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8, Pillow bilinear (which antialiases when shrinking)."""
    from PIL import Image

    if a.shape[:2] == (h, w):
        return a
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_image_folder(path: str | os.PathLike, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``folder:PATH`` input: one sub-folder per class, PNG/JPEG files inside.

    Returns ``x`` uint8 (N, 3, H, W), values 0..255, and ``y`` (N,) class-name strings; classes
    are the sorted sub-folder names, samples are ordered by class then file name.

    Size: with ``image_size`` every image is resized to image_size x image_size. Without it, the
    most common (H, W) of the folder is used (ties: the larger area) and only images of other
    sizes are resized, so a folder of equal-sized images is read exactly as stored. Resizing is
    Pillow bilinear and does not keep the aspect ratio (no crop, nothing is cut off).

    Images are converted to RGB (grey replicated, alpha dropped, 16-bit grey scaled to 8 bits,
    EXIF rotation applied). Hidden files and folders are ignored; other non-PNG/JPEG files are
    skipped with a warning; only files directly inside a class folder are read.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist; pass folder:PATH with one sub-folder per class")
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder; pass folder:PATH with one sub-folder per class")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}")

    entries = _visible(list(root.iterdir()))
    class_dirs = [e for e in entries if e.is_dir()]
    loose = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
    if not class_dirs:
        found = f" (found {len(loose)} images directly in it)" if loose else ""
        raise DataError(
            f"image folder '{root}' has no class sub-folders{found}; "
            f"put each class's images in its own sub-folder, e.g. {root / 'cat' / '001.png'}"
        )
    if len(class_dirs) < 2:
        raise DataError(
            f"image folder '{root}' has only one class sub-folder ('{class_dirs[0].name}'); "
            "classification needs at least 2 classes, one sub-folder each"
        )
    if loose:
        warnings.warn(
            f"{len(loose)} images directly in '{root}' (not in a class sub-folder) are ignored",
            stacklevel=2,
        )

    files: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for d in class_dirs:
        inside = [e for e in _visible(list(d.iterdir())) if e.is_file()]
        images = [e for e in inside if e.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [e for e in inside if e.suffix.lower() not in IMAGE_SUFFIXES]
        if not images:
            raise DataError(
                f"class folder '{d}' has no PNG or JPEG images; add images to it or remove the folder"
            )
        files += [(f, d.name) for f in images]
    if skipped:
        warnings.warn(
            f"{len(skipped)} files that are not PNG/JPEG were skipped, e.g. '{skipped[0]}'",
            stacklevel=2,
        )

    pixels: list[np.ndarray | None] = [_read_rgb(f) for f, _ in files]  # (H_i, W_i, 3) uint8 each
    if image_size is not None:
        h, w = image_size, image_size
    else:
        counts = Counter(a.shape[:2] for a in pixels if a is not None)
        (h, w), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
    x = np.empty((len(pixels), 3, h, w), dtype=np.uint8)  # (N, 3, H, W)
    for i, a in enumerate(pixels):
        x[i] = _resize_rgb(a, h, w).transpose(2, 0, 1)  # type: ignore[arg-type]
        pixels[i] = None  # free as we go: peak ~1 copy of the data, not 2
    y = np.array([label for _, label in files])
    return x, y


# --------------------------------------------------------------------------- scaling
def to_unit_float(x: np.ndarray | Tensor) -> Tensor:
    """uint8 0..255 -> float32 in [0, 1]; float input is returned as float32 unchanged in value."""
    t = torch.as_tensor(x)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if not t.is_floating_point():
        raise DataError(f"expected uint8 or float images, got dtype {t.dtype}; scale them to [0, 1] first")
    return t.float()


def imagenet_normalize(x: Tensor) -> Tensor:
    """(..., 3, H, W) float in [0, 1] -> (x - mean) / std per channel, what ImageNet bodies expect."""
    if x.ndim < 3 or x.shape[-3] != 3:
        raise DataError(f"imagenet_normalize needs (batch, 3, height, width) images, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"imagenet_normalize needs float input in [0, 1], got {x.dtype}; use to_unit_float first")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_three_channels(x: np.ndarray | Tensor, max_value: float | None = None) -> np.ndarray | Tensor:
    """Grey (N, H, W) or (N, 1, H, W) intensities -> float32 (N, 3, H, W) in [0, 1].

    Scaling is ``x / max_value`` with 0 as black. ``max_value=None`` means 255 for uint8, 1 for
    bool, else ``x.max()`` of this array. Pass it explicitly when splits are converted separately
    so train and test get the same scale (sklearn digits: ``max_value=16``). The grey channel is
    replicated to R, G, B, which is what an RGB body sees for a grey photo. (N, 3, H, W) input is
    only scaled. Returns the input's type (numpy or torch).
    """
    is_numpy = isinstance(x, np.ndarray)
    t = torch.as_tensor(x)
    if t.ndim == 3:
        t = t.unsqueeze(1)  # (N, 1, H, W)
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise DataError(
            f"to_three_channels needs grey images shaped (N, H, W) or (N, 1, H, W), got {tuple(t.shape)}"
        )
    if max_value is None:
        if t.dtype == torch.uint8:
            max_value = 255.0
        elif t.dtype == torch.bool:
            max_value = 1.0
        else:
            max_value = float(t.max()) if t.numel() else 1.0
    if not max_value > 0 or not math.isfinite(max_value):
        raise DataError(f"to_three_channels needs a positive finite max_value, got {max_value}")
    t = t.to(torch.float32) / float(max_value)
    if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1 + 1e-6):
        raise DataError(
            f"image intensities must lie in [0, max_value={max_value:g}] and be finite, got "
            f"{float(t.min()) * max_value:g}..{float(t.max()) * max_value:g}; shift/rescale them or pass max_value"
        )
    t = t.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()  # (N, 3, H, W)
    return t.numpy() if is_numpy else t
