"""Dense head: each output token predicts its own patch of the input grid; patches are folded
back (one value per time step or pixel)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ConfigError
from . import register_head


@register_head("dense")
class DenseHead(nn.Module):
    """Each output token predicts its own patch of the input grid; patches are folded back.

    (B, S', D) on grid' -> (B, K, *spatial). The patch per output token is the input grid
    divided by grid' (rounded up), so it also works when the body shrinks the grid (Swin).
    """

    @classmethod
    def build(cls, body, grid: tuple[int, ...], spec) -> "DenseHead":
        if body.causal:
            raise ConfigError(f"--body {spec.body} is decoder-only (causal attention): a dense "
                              "output at the start of the input would see only the tokens before "
                              "it; use a bidirectional body (minilm, a T5 or BART folder)")
        return cls(body.out_dim, spec.n_outputs, tuple(spec.spatial), body.output_grid(grid))

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
