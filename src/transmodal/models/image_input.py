"""The input side of in-modal image transfer: a fixed ``ImageInput`` in front of an ImageNet CNN.

A CNN body (``bodies/efficientnet.py``) takes pixels, so in its ``TransmodalModel`` the place of
the trained embedder is taken by a fixed ``ImageInput``::

    (B, C, H, W) pixels in [0, 1]      the Preprocessor maps the training pixel range there
      -> 3 channels                    grey (C = 1) replicated to R, G, B
      -> image_size x image_size       bilinear (antialiased when shrinking); no aspect crop
      -> ImageAugment                  random flip + resized crop, training mode only (--augment)
      -> ImageNet mean / std           what the CNN body takes (it converts to its native scaling)
    -> CNNBody (B, 1, 1280): one token per image -> pooled linear head (B, K)

Resizing and augmentation run inside the model, batch by batch: prediction on new images of
the training grid repeats them exactly, and the stored data stays at its native size.

Image size: 64 by default (``--image-size``). EfficientNet downsamples 32x, so 64 gives a 2x2
final map; on the 2-core CPU a full fine-tuning step (batch 16) took ~0.5 s at 32, ~0.9 s at 64
and ~3 s at 128 (single thread, shared machine), while 32 lost accuracy on digits (see
``transmodal.bench.tune`` and the issue note). Set 224 for ImageNet-like photos on a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, DataError


class ImageInput(nn.Module):
    """(B, 1|3, H, W) in [0, 1] -> (B, 3, S, S) ImageNet-normalised; augments in training only."""

    def __init__(self, in_channels: int, image_size: int, augment: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_size = int(image_size)
        self.grid = (self.image_size, self.image_size)  # what the body sees
        self.augment = ImageAugment() if augment else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def layout(self) -> dict:
        """How inputs reach the body, for run summaries."""
        return {"image_size": self.image_size}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W): grey as an RGB body sees a grey photo
        x = resize_batch(x, self.image_size)  # (B, 3, S, S)
        if self.augment is not None:
            x = self.augment(x)  # identity in eval mode
        return (x - self.mean) / self.std


def resize_batch(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> float (B, C, size, size): bilinear, antialiased when shrinking.

    Without antialiasing, shrinking (e.g. 512 -> 224) samples every other pixel and aliases fine
    texture. Returns ``x`` itself when it already has the size. uint8 input becomes float (same
    0..255 values; convert with ``to_unit_float`` first if you want [0, 1]).
    """
    if x.ndim != 4:
        raise DataError(f"resize_batch needs (batch, channels, height, width), got shape {tuple(x.shape)}")
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ConfigError(f"resize size must be positive, got {size}")
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if not x.is_floating_point():
        x = x.float()
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)


# --------------------------------------------------------------------------- augmentation
class ImageAugment(nn.Module):
    """Random horizontal flip and random resized crop, on whole batches, training mode only.

    Each sample gets its own crop covering a fraction ``scale`` of the image area (default
    (0.5, 1.0): at least half, so a small object such as a digit stays in view; torchvision's
    (0.08, 1.0) is meant for ImageNet-sized training) with aspect ratio in ``ratio``, resized
    back to the input size, and is mirrored left-right with probability 1/2. A crop side that
    would exceed the image is clipped to it. One ``grid_sample`` does it all, so it is pure
    torch, works on any device, and draws all randomness from torch's generator:
    deterministic under ``torch.manual_seed``. In eval mode it returns its input unchanged.
    Input: float (B, C, H, W); output the same shape.
    """

    def __init__(
        self,
        flip: bool = True,
        scale: tuple[float, float] | None = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        super().__init__()
        if scale is not None and not (0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ConfigError(f"crop ratio must satisfy 0 < low <= high, got {ratio}")
        self.flip = bool(flip)
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def extra_repr(self) -> str:
        return f"flip={self.flip}, scale={self.scale}, ratio={self.ratio}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or (not self.flip and self.scale is None):
            return x
        if x.ndim != 4 or not x.is_floating_point():
            raise DataError(f"ImageAugment needs float (batch, channels, height, width), got {x.dtype} {tuple(x.shape)}")
        b, dev = x.shape[0], x.device
        ones = torch.ones(b, device=dev)
        zeros = torch.zeros(b, device=dev)
        sw, sh, tx, ty = ones, ones, zeros, zeros  # crop half-widths and centres, in [-1, 1] coords
        if self.scale is not None:
            lo, hi = self.scale
            area = lo + (hi - lo) * torch.rand(b, device=dev)  # (B,) fraction of the image area
            log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * torch.rand(
                b, device=dev
            )
            r = log_r.exp()  # (B,) width / height, relative to the image's own aspect
            sw = (area * r).sqrt().clamp(max=1.0)  # (B,) crop width / image width
            sh = (area / r).sqrt().clamp(max=1.0)
            tx = (1 - sw) * (2 * torch.rand(b, device=dev) - 1)  # centre anywhere keeping the crop inside
            ty = (1 - sh) * (2 * torch.rand(b, device=dev) - 1)
        if self.flip:
            sign = torch.where(torch.rand(b, device=dev) < 0.5, -ones, ones)  # -1: mirror x
            sw = sw * sign
        theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)  # output coords -> input coords
        theta[:, 0, 0] = sw
        theta[:, 0, 2] = tx
        theta[:, 1, 1] = sh
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
