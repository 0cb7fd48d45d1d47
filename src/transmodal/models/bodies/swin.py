"""Swin: our tokens on a 2-D grid through its stages, which halve the grid between stages."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from . import register_body
from .vit import PatchVisionBody


@register_body
class SwinBody(PatchVisionBody):
    family = "swin"
    model_types = ("swin",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.embed_dim = int(model.config.embed_dim)
        self.out_dim = int(model.num_features)
        self.max_tokens = 4096  # windowed attention: no position limit of its own

    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]):
        """tokens (B, h*w, D) on (h, w) -> hidden (B, h'*w', D') on the output grid."""
        if len(grid) != 2:
            raise ConfigError("Swin bodies need 2-D inputs (C, H, W); use a text or ViT body for series")
        emb = self.model.embeddings
        hidden = emb.dropout(emb.norm(tokens))  # Swin normalises its patch embeddings
        out = self.model.encoder(hidden, tuple(grid)).last_hidden_state
        return self.model.layernorm(out), self.output_grid(grid)

    def output_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        h, w = grid
        for _ in range(len(self.model.encoder.layers) - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        return (h, w)

    def embed_tokens(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        return self.model.embeddings.norm(tokens)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)  # its stages

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """All of its embeddings but the patch LayerNorm."""
        used = ("model.embeddings.norm.",)
        return [(n, p) for n, p in self.named_parameters()
                if n.startswith("model.embeddings.") and not n.startswith(used)]
