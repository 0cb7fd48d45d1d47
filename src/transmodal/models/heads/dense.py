"""Dense head: each output token predicts its own patch of the input grid; patches are folded
back (one value per time step or pixel).

``--dense-skip linear`` adds a path past the body: a linear map of each input patch to its
output patch (a strided convolution, kernel = stride = the head's patch), added to what the
body's token predicts. Why: the embedder's LayerNorm keeps each patch's shape but squashes its
amplitude, which a field-to-field map must carry through to the output; U-Nets keep a skip for
the same reason and FNO layers a pointwise linear path. It starts at zero, so a new model's
first outputs are the body's alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

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
        skip = getattr(spec, "dense_skip", "none")  # files written before the option: none
        return cls(body.out_dim, spec.n_outputs, tuple(spec.spatial), body.output_grid(grid),
                   in_channels=spec.in_channels if skip == "linear" else 0)

    def __init__(self, dim: int, n_outputs: int, spatial: tuple[int, ...],
                 out_grid: tuple[int, ...], in_channels: int = 0) -> None:
        super().__init__()
        self.spatial = tuple(spatial)
        self.out_grid = tuple(out_grid)
        self.patch = tuple(math.ceil(s / g) for s, g in zip(spatial, out_grid))
        self.n_outputs = n_outputs
        self.fc = nn.Linear(dim, n_outputs * math.prod(self.patch))
        # the skip path (in_channels > 0): input patch -> output patch, zero at the start
        self.skip: nn.Module | None = None
        if in_channels:
            conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
            self.skip = conv(in_channels, n_outputs * math.prod(self.patch),
                             kernel_size=self.patch, stride=self.patch)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)

    @property
    def takes_input(self) -> bool:
        """The model passes its input too (``forward``'s ``x``) when the skip path is on."""
        return self.skip is not None

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...],
                x: torch.Tensor | None = None) -> torch.Tensor:
        b = hidden.shape[0]
        k = self.n_outputs
        y = self.fc(hidden)  # (B, S', K * prod(patch))
        if self.skip is not None:
            pad = []
            for s, g, p in reversed(list(zip(self.spatial, self.out_grid, self.patch))):
                pad += [0, g * p - s]  # F.pad wants the last dim first
            x = F.pad(x, pad) if any(pad) else x  # (B, C, *out_grid * patch)
            y = y + self.skip(x).flatten(2).transpose(1, 2)  # + (B, S', K * prod(patch))
        if len(self.spatial) == 1:
            (g,), (p,) = self.out_grid, self.patch
            y = y.reshape(b, g, k, p).permute(0, 2, 1, 3).reshape(b, k, g * p)
            return y[:, :, : self.spatial[0]]
        (gh, gw), (ph, pw) = self.out_grid, self.patch
        y = y.reshape(b, gh, gw, k, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, k, gh * ph, gw * pw)
        return y[:, :, : self.spatial[0], : self.spatial[1]]
