"""Embedder: any (C, L) or (C, H, W) input -> a token sequence the body accepts.

A strided convolution (kernel = stride = patch) cuts the input into patches, so the
sequence is short enough for the body (and for CPU speed); a LayerNorm then sets the
token scale. ``--embedder`` chooses what comes before that LayerNorm (same token grid for all):

- ``patch``: the strided convolution alone (kernel = stride = patch).
- ``overlap``: kernel = 2 x patch, same stride, the input padded by half a patch on each
  side, so each token sees its patch and half of each neighbour (long series: a shape that
  straddles a patch border is still seen whole).
- ``conv``: a small convolutional stem at full resolution (two convs, k=7 on series, k=3 on
  fields, each with a norm and GELU), then the strided patch convolution: local features
  are computed at every step before the patch pools them. The LayerNorm gain starts at ``body token norm / sqrt(D)``: tokens then have
the norm of the body's own input embeddings, so its position embeddings are not drowned
(DESIGN.md: gain 1 lost 21 points on GunPoint).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError


def plan_patches(spatial: tuple[int, ...], max_tokens: int) -> tuple[int, ...]:
    """Smallest patch (per spatial dim) giving at most ``max_tokens`` tokens."""
    if len(spatial) == 1:
        return (max(1, math.ceil(spatial[0] / max_tokens)),)
    h, w = spatial
    p = max(1, math.ceil(math.sqrt(h * w / max_tokens)))
    while True:
        ph, pw = min(p, h), min(p, w)
        if math.ceil(h / ph) * math.ceil(w / pw) <= max_tokens:
            return (ph, pw)
        p += 1


def token_grid(spatial: tuple[int, ...], patch: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(s / p) for s, p in zip(spatial, patch))


EMBEDDERS = ("patch", "overlap", "conv")
STEM_WIDTH = {1: 64, 2: 32}  # stem channels: series / fields (a 2-D stem runs on H x W pixels)
STEM_KERNEL = {1: 7, 2: 3}


def conv_stem(in_channels: int, ndim: int) -> nn.Sequential:
    """Two 'same' convolutions at full resolution, each followed by a norm and GELU.

    GroupNorm(1, width) normalises each sample on its own (no batch statistics: the same
    output in training and prediction, for any batch size)."""
    conv = nn.Conv1d if ndim == 1 else nn.Conv2d
    width, k = STEM_WIDTH[ndim], STEM_KERNEL[ndim]
    return nn.Sequential(
        conv(in_channels, width, k, padding=k // 2), nn.GroupNorm(1, width), nn.GELU(),
        conv(width, width, k, padding=k // 2), nn.GroupNorm(1, width), nn.GELU(),
    )


class Embedder(nn.Module):
    """(B, C, *spatial) -> tokens (B, S, D) on a grid of S = prod(grid) patches."""

    def __init__(self, in_channels: int, spatial: tuple[int, ...], dim: int,
                 max_tokens: int, token_norm: float, kind: str = "patch") -> None:
        super().__init__()
        if kind not in EMBEDDERS:
            raise ConfigError(f"unknown --embedder {kind!r}; choose one of {', '.join(EMBEDDERS)}")
        self.kind = kind
        self.spatial = tuple(spatial)
        self.patch = plan_patches(self.spatial, max_tokens)
        self.grid = token_grid(self.spatial, self.patch)
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        if kind == "conv":
            self.stem = conv_stem(in_channels, len(spatial))
            in_channels = STEM_WIDTH[len(spatial)]
        kernel = tuple(2 * p for p in self.patch) if kind == "overlap" else self.patch
        self.proj = conv(in_channels, dim, kernel_size=kernel, stride=self.patch)
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            self.norm.weight.fill_(token_norm / math.sqrt(dim))

    def layout(self) -> dict:
        """How inputs reach the body, for run summaries."""
        return {"tokens": int(math.prod(self.grid)), "patch": list(self.patch),
                "embedder": self.kind}

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(g * p for g, p in zip(self.grid, self.patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for s, p in reversed(list(zip(self.spatial, self.padded))):  # F.pad wants last dim first
            pad += [0, p - s]
        if self.kind == "overlap":  # half a patch more on each side: a kernel of 2 patches
            # centred on each patch keeps the grid (left p // 2, right p - p // 2)
            pad = [q for p, extra in zip(reversed(self.patch), pad[1::2])
                   for q in (p // 2, extra + p - p // 2)]
        if any(pad):
            x = F.pad(x, pad)  # zeros = the training mean after normalisation
        if self.kind == "conv":
            x = self.stem(x)  # (B, width, *padded): features at full resolution
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, S, D)
        return self.norm(tokens)
