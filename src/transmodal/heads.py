"""Heads: pooled linear for classification/regression, per-token projection for dense outputs."""

from __future__ import annotations

import math

import torch
from torch import nn


class PooledHead(nn.Module):
    """Mean over tokens, then one linear layer: (B, S, D) -> (B, K)."""

    def __init__(self, dim: int, n_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, n_outputs)

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        return self.fc(hidden.mean(dim=1))


class DenseHead(nn.Module):
    """Each output token predicts its own patch of the input grid; patches are folded back.

    (B, S', D) on grid' -> (B, K, *spatial). The patch per output token is the input grid
    divided by grid' (rounded up), so it also works when the body shrinks the grid (Swin).
    """

    def __init__(self, dim: int, n_outputs: int, spatial: tuple[int, ...],
                 out_grid: tuple[int, ...]) -> None:
        super().__init__()
        self.spatial = tuple(spatial)
        self.out_grid = tuple(out_grid)
        self.patch = tuple(math.ceil(s / g) for s, g in zip(spatial, out_grid))
        self.n_outputs = n_outputs
        self.fc = nn.Linear(dim, n_outputs * math.prod(self.patch))

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        b = hidden.shape[0]
        k = self.n_outputs
        y = self.fc(hidden)  # (B, S', K * prod(patch))
        if len(self.spatial) == 1:
            (g,), (p,) = self.out_grid, self.patch
            y = y.reshape(b, g, k, p).permute(0, 2, 1, 3).reshape(b, k, g * p)
            return y[:, :, : self.spatial[0]]
        (gh, gw), (ph, pw) = self.out_grid, self.patch
        y = y.reshape(b, gh, gw, k, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, k, gh * ph, gw * pw)
        return y[:, :, : self.spatial[0], : self.spatial[1]]
