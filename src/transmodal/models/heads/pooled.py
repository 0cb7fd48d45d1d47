"""Pooled head: mean over tokens, one linear layer (classification and regression)."""

from __future__ import annotations

import torch
from torch import nn

from . import register_head


@register_head("pooled")
class PooledHead(nn.Module):
    """Mean over tokens, then one linear layer: (B, S, D) -> (B, K)."""

    @classmethod
    def build(cls, body, grid: tuple[int, ...], spec) -> "PooledHead":
        return cls(body.out_dim, spec.n_outputs)

    def __init__(self, dim: int, n_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, n_outputs)

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        return self.fc(hidden.mean(dim=1))
