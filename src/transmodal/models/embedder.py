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
  are computed at every step before the patch pools them.
- ``rocket`` (series only): the patch tokens plus, added to each, a learned projection of
  MiniRocket-style features of its patch: fixed dilated kernels (weights -1 and 2, 84 of them,
  up to 8 dilations spanning the series) run at every step, and each token counts the share of
  its steps above a few biases (PPV). Why: on ArrowHead and OSULeaf a random patch embedder
  feeds MiniLM features whose best linear read-out stays 15-30 points below MiniRocket (README,
  "The recipe, measured"); dilated kernels see shapes longer than a patch. The biases and the
  features' standardisation are fitted on the training inputs (``fit_inputs``, before any
  training) and stored with the weights.

The LayerNorm gain starts at ``body token norm / sqrt(D)``: tokens then have
the norm of the body's own input embeddings, so its position embeddings are not drowned
(DESIGN.md: gain 1 lost 21 points on GunPoint).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
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


EMBEDDERS = ("patch", "overlap", "conv", "rocket")
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


ROCKET_LENGTH = 9  # MiniRocket's kernel: 9 taps, 3 of them weighted 2, the other 6 -1
ROCKET_DILATIONS = 8  # at most; exponentially spaced up to the series' length
ROCKET_BIASES = 4  # thresholds per kernel and dilation (quantiles of one training series)
ROCKET_FIT_SAMPLES = 512  # training series used for the features' mean and spread


def rocket_dilations(length: int) -> list[int]:
    """Exponentially spaced dilations whose kernel span (8 x dilation) fits in the series."""
    top = math.log2(max(length - 1, 1) / (ROCKET_LENGTH - 1)) if length > ROCKET_LENGTH else 0.0
    return sorted({int(2 ** e) for e in np.linspace(0.0, max(top, 0.0), ROCKET_DILATIONS)})


class RocketFeatures(nn.Module):
    """(B, C, L) series -> (B, F, L) 0/1 maps: kernel k at dilation d exceeds bias q at step t.

    Nothing here trains: the kernels are fixed, each (kernel, dilation) sums a random subset of
    the channels (MiniRocket's multivariate rule), and the biases are set by ``fit_inputs``."""

    def __init__(self, in_channels: int, length: int) -> None:
        super().__init__()
        self.dilations = rocket_dilations(length)
        taps = torch.combinations(torch.arange(ROCKET_LENGTH), 3)  # (84, 3)
        kernels = -torch.ones(len(taps), ROCKET_LENGTH)
        kernels.scatter_(1, taps, 2.0)  # (K, 9), each sums to 0
        n_d, n_k = len(self.dilations), len(kernels)
        # channels per (dilation, kernel): 2^U(0, log2(min(C, 9) + 1)), at least one
        top = math.log2(min(in_channels, ROCKET_LENGTH) + 1)
        counts = (2 ** (torch.rand(n_d, n_k) * top)).floor().clamp(1, in_channels).long()
        mask = torch.zeros(n_d, n_k, in_channels)
        for d in range(n_d):
            for k in range(n_k):
                mask[d, k, torch.randperm(in_channels)[:counts[d, k]]] = 1.0
        self.register_buffer("weight", kernels[None, :, None, :] * mask[..., None])  # (D, K, C, 9)
        self.register_buffer("bias", torch.zeros(n_d, n_k, ROCKET_BIASES))  # (D, K, Q)

    @property
    def n_features(self) -> int:
        return self.bias.numel()

    def kernel_outputs(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """(B, C, L) -> (B, K, L): every kernel at the i-th dilation, 'same' padding."""
        d = self.dilations[i]
        return F.conv1d(x, self.weight[i].to(x.dtype), padding=(ROCKET_LENGTH // 2) * d, dilation=d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for i in range(len(self.dilations)):
            conv = self.kernel_outputs(x, i)  # (B, K, L)
            above = conv[:, :, None, :] > self.bias[i].to(x.dtype)[None, :, :, None]  # (B, K, Q, L)
            maps.append(above.flatten(1, 2))
        return torch.cat(maps, 1).to(x.dtype)  # (B, F, L)

    @torch.no_grad()
    def fit_biases(self, x: torch.Tensor) -> None:
        """Biases at low-discrepancy quantiles of the kernel outputs on one random training
        series per dilation (as MiniRocket; the global torch RNG, seeded by fit)."""
        quantiles = torch.tensor([(q * 0.6180339887) % 1.0 for q in range(1, ROCKET_BIASES + 1)])
        for i in range(len(self.dilations)):
            one = x[torch.randint(len(x), (1,))]
            conv = self.kernel_outputs(one, i)[0]  # (K, L)
            self.bias[i] = torch.quantile(conv.float(), quantiles.to(conv.device), dim=1).T


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
        if kind == "rocket":
            if len(spatial) != 1:
                raise ConfigError(f"--embedder rocket is for series (C, L); these inputs are "
                                  f"{len(spatial)}-D fields: use patch, overlap or conv")
            self.rocket = RocketFeatures(in_channels, spatial[0])
            n = self.rocket.n_features
            self.rocket_proj = nn.Linear(n, dim)
            # the features' mean and spread over the training steps (fit_inputs)
            self.register_buffer("rocket_mean", torch.zeros(n))
            self.register_buffer("rocket_std", torch.ones(n))
        kernel = tuple(2 * p for p in self.patch) if kind == "overlap" else self.patch
        self.proj = conv(in_channels, dim, kernel_size=kernel, stride=self.patch)
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            self.norm.weight.fill_(token_norm / math.sqrt(dim))

    def layout(self) -> dict:
        """How inputs reach the body, for run summaries."""
        return {"tokens": int(math.prod(self.grid)), "patch": list(self.patch),
                "embedder": self.kind}

    @torch.no_grad()
    def fit_inputs(self, x: Any) -> None:
        """Fit what depends on the training inputs (``rocket``: its biases, then its features'
        mean and spread); called once on a fresh model, never on a resumed or loaded one."""
        if self.kind != "rocket":
            return
        device = self.rocket_mean.device
        pick = torch.randperm(len(x))[:ROCKET_FIT_SAMPLES].sort().values.numpy()  # data on disk:
        some = torch.as_tensor(np.asarray(x[pick]), dtype=torch.float32)  # a bounded sample
        self.rocket.fit_biases(some.to(device))
        feats = torch.cat([self._rocket_patches(b.to(device)) for b in some.split(64)])  # (N, S, F)
        feats = feats.flatten(0, 1)
        self.rocket_mean.copy_(feats.mean(0))
        self.rocket_std.copy_(feats.std(0).clamp_min(1e-2))

    def _rocket_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, S, F): each feature's share of 1s over the steps of each patch."""
        maps = self.rocket(x)  # (B, F, L)
        extra = self.padded[0] - maps.shape[-1]
        ones = F.pad(torch.ones_like(maps[:1, :1]), (0, extra))  # (1, 1, padded): real steps
        sums = F.avg_pool1d(F.pad(maps, (0, extra)), self.patch[0])  # (B, F, S), padding as 0
        return (sums / F.avg_pool1d(ones, self.patch[0])).transpose(1, 2)

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(g * p for g, p in zip(self.grid, self.patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = x  # rocket reads the series unpadded (its kernels pad themselves)
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
        if self.kind == "rocket":  # no gradient flows into fixed 0/1 maps; the projection trains
            with torch.no_grad():
                feats = (self._rocket_patches(raw) - self.rocket_mean) / self.rocket_std  # (B, S, F)
            tokens = tokens + self.rocket_proj(feats)
        return self.norm(tokens)
