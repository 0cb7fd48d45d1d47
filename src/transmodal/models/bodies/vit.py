"""ViT: our tokens + the ViT's own position embeddings (interpolated to the token grid), a CLS
token in front, then its layers and final LayerNorm; the CLS output is dropped."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import register_body
from .hf import HFBody


class PatchVisionBody(HFBody):
    """What ViT and Swin share: a patch projection of pixels, whose output scale we match."""

    source_modality = "image"

    @classmethod
    def model_kwargs(cls, config) -> dict[str, Any]:
        return {"add_pooling_layer": False}

    def patch_projection(self) -> nn.Conv2d:
        """Its own pixel-patch projection (the input layer our embedder replaces)."""
        return self.model.embeddings.patch_embeddings.projection

    def pixel_patch(self) -> tuple[int, int]:
        """The side of one pixel patch of its own patch embedding."""
        return tuple(self.patch_projection().kernel_size)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) through the body's own patch embedding -> (B, P, D)."""
        proj = self.patch_projection()
        patches = proj(pixels)  # (B, D, h, w)
        tokens = patches.flatten(2).transpose(1, 2)
        return self.embed_tokens(tokens, tuple(patches.shape[2:]))

    @torch.no_grad()
    def input_token_norm(self) -> float:
        """The patch projection of unit-variance pixels (ImageNet-normalised images have roughly
        unit variance per pixel)."""
        proj = self.patch_projection()
        g = torch.Generator().manual_seed(0)
        k = proj.kernel_size
        x = torch.randn(8, proj.in_channels, k[0] * 4, k[1] * 4, generator=g)
        return float(proj(x).flatten(2).norm(dim=1).mean())


def grid_positions(pos: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """A square grid of learnt patch positions (1, P, D) for our token grid: bicubic resize for a
    2-D grid, the first positions in raster order (linearly stretched if too few) for 1-D."""
    side = int(math.isqrt(pos.shape[1]))
    if len(grid) == 1:
        if grid[0] <= pos.shape[1]:
            return pos[:, : grid[0]]
        return nn.functional.interpolate(pos.transpose(1, 2), size=grid[0], mode="linear",
                                         align_corners=False).transpose(1, 2)
    img = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, side, side)
    if tuple(grid) != (side, side):
        img = nn.functional.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False)
    return img.flatten(2).transpose(1, 2)  # (1, h*w, D)


@register_body
class ViTBody(PatchVisionBody):
    family = "vit"
    model_types = ("vit",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.embed_dim = int(model.config.hidden_size)
        self.out_dim = self.embed_dim
        self.max_tokens = int(model.embeddings.position_embeddings.shape[1] - 1)

    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]):
        """tokens (B, S, D) -> hidden (B, S, D) on the same grid."""
        emb = self.model.embeddings
        pos = self.position_embeddings_for(grid).to(tokens.dtype)  # (1, S, D)
        cls_tok = (emb.cls_token + emb.position_embeddings[:, :1]).expand(len(tokens), -1, -1)
        hidden = torch.cat([cls_tok.to(tokens.dtype), tokens + pos], dim=1)  # (B, 1+S, D)
        hidden = emb.dropout(hidden)
        for layer in self.model.layers:
            hidden = layer(hidden)
        return self.model.layernorm(hidden)[:, 1:], grid  # drop CLS: (B, S, D)

    def position_embeddings_for(self, grid: tuple[int, ...]) -> torch.Tensor:
        """ViT positions for our token grid (``grid_positions``)."""
        return grid_positions(self.model.embeddings.position_embeddings[:, 1:], grid)

    def embed_tokens(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        return tokens + self.position_embeddings_for(grid).to(tokens.dtype)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.layers)

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The patch projection (the CLS token and position embeddings are used)."""
        used = ("model.embeddings.cls_token", "model.embeddings.position_embeddings")
        return [(n, p) for n, p in self.named_parameters()
                if n.startswith("model.embeddings.") and not n.startswith(used)]
