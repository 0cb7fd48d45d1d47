"""In-modal image transfer: an ImageNet CNN body on image inputs, behind the model interface.

``ImageModel`` has what ``TransmodalModel`` has (``body``, ``head``, ``spec``, ``forward``); only
the input side differs. Instead of a trained embedder it has a fixed ``ImageInput``::

    (B, C, H, W) pixels in [0, 1]      the Preprocessor maps the training pixel range there
      -> 3 channels                    grey (C = 1) replicated to R, G, B
      -> image_size x image_size       bilinear (antialiased when shrinking); no aspect crop
      -> ImageAugment                  random flip + resized crop, training mode only (--augment)
      -> ImageNet mean / std           what the CNN body takes (it converts to its native scaling)
    -> CNNBody (B, 1280) -> linear head (B, K)

Resizing and augmentation run inside the model, batch by batch: prediction on new images of
the training grid repeats them exactly, and the stored data stays at its native size.

Image size: 64 by default (``--image-size``). EfficientNet downsamples 32x, so 64 gives a 2x2
final map; on the 2-core CPU a full fine-tuning step (batch 16) took ~0.5 s at 32, ~0.9 s at 64
and ~3 s at 128 (single thread, shared machine), while 32 lost accuracy on digits (see
``bench/tune.py`` and the issue note). Set 224 for ImageNet-like photos on a GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError

DEFAULT_IMAGE_SIZE = 64


def is_cnn_body(name: str) -> bool:
    """True for the names of the ImageNet CNN bodies (``efficientnet-lite0``)."""
    from .cnn_body import KNOWN_CNN_BODIES

    return str(name).lower() in KNOWN_CNN_BODIES


def is_cnn_module(body: nn.Module) -> bool:
    from .cnn_body import CNNBody

    return isinstance(body, CNNBody)


class ImageInput(nn.Module):
    """(B, 1|3, H, W) in [0, 1] -> (B, 3, S, S) ImageNet-normalised; augments in training only."""

    def __init__(self, in_channels: int, image_size: int, augment: bool = False) -> None:
        super().__init__()
        from .images import IMAGENET_MEAN, IMAGENET_STD, ImageAugment

        self.in_channels = in_channels
        self.image_size = int(image_size)
        self.augment = ImageAugment() if augment else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .images import resize_batch

        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W): grey as an RGB body sees a grey photo
        x = resize_batch(x, self.image_size)  # (B, 3, S, S)
        if self.augment is not None:
            x = self.augment(x)  # identity in eval mode
        return (x - self.mean) / self.std


class LinearHead(nn.Module):
    """Pooled CNN features (B, F) -> (B, K)."""

    def __init__(self, dim: int, n_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class ImageModel(nn.Module):
    """(B, C, H, W) images -> logits (B, K) | outputs (B, K)."""

    def __init__(self, image_input: ImageInput, body: nn.Module, head: LinearHead, spec) -> None:
        super().__init__()
        self.image_input = image_input
        self.body = body
        self.head = head
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.image_input(x)))  # (B, 3, S, S) -> (B, F) -> (B, K)


def build_image_model(spec, pretrained: bool) -> ImageModel:
    """The CNN model for ``spec`` (fills ``spec.image_size`` when it is None)."""
    from .cnn_body import CNNBody

    name = spec.body.lower()
    if spec.task == "dense":
        raise ConfigError(f"body {name} gives one feature vector per image, so it cannot predict "
                          "dense (per-pixel) targets; use a transformer body (--body minilm)")
    if len(spec.spatial) != 2:
        raise ConfigError(
            f"body {name} takes images (N, C, H, W); this data has samples of shape "
            f"{(spec.in_channels, *spec.spatial)}. Use a transformer body (--body minilm) for series")
    if spec.in_channels not in (1, 3):
        raise ConfigError(
            f"body {name} takes grey (1-channel) or RGB (3-channel) images; this data has "
            f"{spec.in_channels} channels. Use a transformer body (--body minilm), whose embedder "
            "takes any number of channels")
    if spec.image_size is None:
        spec.image_size = DEFAULT_IMAGE_SIZE
    if int(spec.image_size) < 8:
        raise ConfigError(f"--image-size must be at least 8, got {spec.image_size}")
    body = CNNBody.from_pretrained(name, pretrained=pretrained)
    spec.body_config = {}  # the architecture is fixed by the name
    return ImageModel(ImageInput(spec.in_channels, spec.image_size, spec.augment), body,
                      LinearHead(body.num_features, spec.n_outputs), spec)
