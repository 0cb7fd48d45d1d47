"""Embedder: any (C, L) or (C, H, W) input -> a token sequence the body accepts.

A strided convolution (kernel = stride = patch) cuts the input into patches, so the
sequence is short enough for the body (and for CPU speed); a LayerNorm then sets the
token scale. The LayerNorm gain starts at ``body token norm / sqrt(D)``: tokens then have
the norm of the body's own input embeddings, so its position embeddings are not drowned
(DESIGN.md: gain 1 lost 21 points on GunPoint).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


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


class Embedder(nn.Module):
    """(B, C, *spatial) -> tokens (B, S, D) on a grid of S = prod(grid) patches."""

    def __init__(self, in_channels: int, spatial: tuple[int, ...], dim: int,
                 max_tokens: int, token_norm: float) -> None:
        super().__init__()
        self.spatial = tuple(spatial)
        self.patch = plan_patches(self.spatial, max_tokens)
        self.grid = token_grid(self.spatial, self.patch)
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        self.proj = conv(in_channels, dim, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            self.norm.weight.fill_(token_norm / math.sqrt(dim))

    def layout(self) -> dict:
        """How inputs reach the body, for run summaries."""
        return {"tokens": int(math.prod(self.grid)), "patch": list(self.patch)}

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(g * p for g, p in zip(self.grid, self.patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for s, p in reversed(list(zip(self.spatial, self.padded))):  # F.pad wants last dim first
            pad += [0, p - s]
        if any(pad):
            x = F.pad(x, pad)  # zeros = the training mean after normalisation
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, S, D)
        return self.norm(tokens)
