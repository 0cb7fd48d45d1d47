"""--augment: named transforms of training batches (refine stage only).

Series and fields for token bodies, (B, C, L) or (B, C, H, W), standardised inputs:

  roll            a circular shift of every spatial axis by a random whole number of steps,
                  per sample (periodic data: a field on a periodic domain, a cyclic series)
  time-warp       smooth monotone resampling of every spatial axis (Um et al. 2017)
  window-slice    a random window of 90% of each axis, stretched back to full size
  magnitude-warp  a smooth random curve (surface) ~1 +- 0.2, multiplied in, per channel
  scaling         one factor ~N(1, 0.1) per sample and channel
  jitter          Gaussian noise, sigma 0.03 (of the standardised scale)
  mixup           x = lam x + (1 - lam) x[perm], lam ~ Beta(0.2, 0.2), one per batch
  cutmix          a random segment (box in 2-D) pasted from x[perm], one per batch

They run in that order whatever order the user wrote (the config records it); with both
mixup and cutmix, each batch gets one of them at random. Images for CNN bodies keep
``flip-crop``, which lives in the model (``models/image_input.py``, ``ModelSpec.augment``).

Which transforms keep an (input, target) pair valid depends on the target, so each task says
what its targets are (``Task.augment_targets``) and :func:`check_task` applies the rules:

- ``labels`` (classification): every transform; mixup and cutmix weight the loss,
  ``lam * loss(y_a) + (1 - lam) * loss(y_b)`` (cutmix: lam = the share not pasted).
- ``texts`` (contrastive): the label-preserving ones; mixup and cutmix are refused (the
  in-batch InfoNCE loss couples the samples, so a mixed sample has no single text).
- ``values`` (regression): jitter only. Small input noise is a known regulariser (training
  with noise ~ Tikhonov regularisation, Bishop 1995); every other transform changes what a
  regression target may depend on (amplitude, duration, the sample itself).
- ``fields`` (dense, per-position targets): the geometric ones transform the target with the
  same random draw (roll, time-warp, window-slice, cutmix shift, resample or paste it; mixup
  mixes it), and jitter; scaling and magnitude-warp are refused (they change the input
  amplitude but not the target's). time-warp, window-slice, cutmix and mixup assume a
  position-wise input->target map, e.g. per-step labelling or denoising; a PDE solution
  operator such as Burgers' is not one. roll assumes only that the map commutes with
  translation on a periodic domain, which every constant-coefficient PDE on a periodic domain
  does (Burgers, heat): each training pair then stands for all its shifts. Measured on the
  suite's Burgers set (15 epochs, 32 tokens): test relative L2 0.183 -> 0.176 (seed 0) and
  0.172 -> 0.163 (seed 1), a small gain while the model still underfits (README).

Randomness comes from one ``torch.Generator`` on the batch's device, seeded from ``--seed``;
the refine stage saves and restores it with its checkpoints (``RefineStage.generators``), so a
resumed run stays bit-identical. With ``none`` nothing is built and nothing is drawn.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ConfigError

IMAGE_TRANSFORMS = ("flip-crop",)
# application order; "geometric" transforms move values along the grid, so a field target
# must move with them
SERIES_TRANSFORMS = ("roll", "time-warp", "window-slice", "magnitude-warp", "scaling", "jitter",
                     "mixup", "cutmix")
MIXES = ("mixup", "cutmix")
ALLOWED = {  # Task.augment_targets -> transforms that keep (input, target) pairs valid
    "labels": SERIES_TRANSFORMS,
    "texts": tuple(n for n in SERIES_TRANSFORMS if n not in MIXES),
    "values": ("jitter",),
    "fields": ("roll", "time-warp", "window-slice", "jitter", "mixup", "cutmix"),
}
WHY_NOT = {
    "texts": "the contrastive loss couples the samples of a batch, so a mixed sample has no "
             "single class text",
    "values": "it changes what a regression target may depend on (amplitude, timing, the "
              "sample itself); regression allows jitter only",
    "fields": "it changes the input's amplitude but not the per-position target's; dense "
              "tasks allow time-warp, window-slice, jitter, mixup, cutmix",
}

JITTER_SIGMA = 0.03
SCALING_SIGMA = 0.1
WARP_SIGMA = 0.2  # magnitude-warp and time-warp knot values ~N(1, 0.2)
WARP_KNOTS = 4  # interior knots of the smooth curves (plus the two ends)
WINDOW = 0.9  # window-slice keeps this share of each axis
MIXUP_ALPHA = 0.2


def parse_augment(value: Any) -> str:
    """Check and normalise an --augment value: ``"none"`` or known names joined by commas, in
    application order. ``True`` / ``False`` (config files and estimators before named
    transforms) mean ``flip-crop`` / ``none``."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "flip-crop"
    if not isinstance(value, str):
        raise ConfigError(f"--augment must be names separated by commas, e.g. jitter,scaling; "
                          f"got {value!r}")
    names = [n.strip() for n in value.split(",")]
    known = (*SERIES_TRANSFORMS, *IMAGE_TRANSFORMS)
    for n in names:
        if n not in known and n != "none":
            raise ConfigError(f"unknown --augment {n!r}; choose none or a comma list of "
                              f"{', '.join(known)}")
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"--augment names {twice!r} twice; give each transform once")
    if "none" in names:
        if len(names) > 1:
            raise ConfigError("--augment none cannot be combined with transforms; drop none")
        return "none"
    return ",".join(n for n in known if n in names)


def augment_names(value: str) -> tuple[str, ...]:
    """The transforms of a normalised --augment value (``none``: none)."""
    return () if value == "none" else tuple(value.split(","))


def check_body(value: str, pixels: bool, body: str) -> None:
    """Image transforms for CNN bodies (which take pixels), series/field ones for the others."""
    names = augment_names(value)
    if pixels:
        wrong = [n for n in names if n not in IMAGE_TRANSFORMS]
        if wrong:
            raise ConfigError(f"--augment {wrong[0]} transforms series and fields; {body} takes "
                              f"images: use --augment {'|'.join(IMAGE_TRANSFORMS)}")
    else:
        wrong = [n for n in names if n in IMAGE_TRANSFORMS]
        if wrong:
            raise ConfigError(f"--augment {wrong[0]}: image transforms apply to CNN image bodies "
                              f"(--body efficientnet-lite0) only; for series and fields use "
                              f"{', '.join(SERIES_TRANSFORMS)}")


def check_task(value: str, task: Any) -> None:
    """Refuse transforms that would make a task's (input, target) pairs wrong (module doc)."""
    kind = getattr(task, "augment_targets", "values")
    for n in augment_names(value):
        if n in IMAGE_TRANSFORMS:
            continue  # checked against the body (check_body)
        if n not in ALLOWED[kind]:
            raise ConfigError(f"--augment {n} does not fit the {task.name} task: {WHY_NOT[kind]}")


def seed_for(seed: int) -> int:
    """The augmentation generator's seed: derived from --seed, apart from the loader's stream."""
    return int(np.random.SeedSequence([int(seed), 0x617567]).generate_state(1)[0])


Mix = tuple[torch.Tensor, float]  # (perm, lam): loss = lam loss(y) + (1 - lam) loss(y[perm])


class BatchAugment:
    """Applies the series/field transforms to a training batch; ``generator`` holds its state."""

    def __init__(self, value: str, targets: str, device: torch.device | str, seed: int) -> None:
        self.names = tuple(n for n in augment_names(value) if n in SERIES_TRANSFORMS)
        self.fields = targets == "fields"  # the target is a field: transform it alike
        self.generator = torch.Generator(device=device).manual_seed(seed_for(seed))

    def __bool__(self) -> bool:
        return bool(self.names)

    # ------------------------------------------------------------------ random draws
    def _randn(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=like.device, dtype=like.dtype)

    def _rand(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=like.device, dtype=like.dtype)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Mix | None]:
        """(B, C, *S) inputs and encoded targets -> transformed ones and the mix to weight the
        loss with (None: the plain loss)."""
        spatial = x.shape[2:]
        if len(spatial) not in (1, 2):
            raise ConfigError(f"--augment transforms series (C, L) and fields (C, H, W); these "
                              f"inputs have {len(spatial)} spatial axes: use --augment none")
        x = x.float() if not x.is_floating_point() else x
        mix: Mix | None = None
        mixes = [n for n in self.names if n in MIXES]
        if len(mixes) == 2:  # one of them per batch
            mixes = [MIXES[int(self._rand(1, like=x).item() < 0.5)]]
        for name in self.names:
            if name in MIXES:
                if name in mixes:
                    x, y, mix = MIX_TRANSFORMS[name](self, x, y)
            else:
                x, y = TRANSFORMS[name](self, x, y)
        return x, y, mix

    # ------------------------------------------------------------------ geometric
    def roll(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift each sample by its own random whole number of steps along every spatial axis,
        wrapping around (exact: no interpolation); a field target moves with its input."""
        b, spatial = len(x), x.shape[2:]
        index = []  # per axis: (B, n) source positions of each output position
        for n in spatial:
            shift = torch.randint(n, (b, 1), generator=self.generator, device=x.device)
            index.append((torch.arange(n, device=x.device) + shift) % n)  # (B, n)
        return self._gather(x, index), (self._gather(y, index) if self.fields else y)

    @staticmethod
    def _gather(v: torch.Tensor, index: list[torch.Tensor]) -> torch.Tensor:
        """v (B, C, *S) read at per-sample positions ``index`` (one (B, n) tensor per axis)."""
        b, c = v.shape[:2]
        if len(index) == 1:
            return v.gather(2, index[0][:, None].expand(b, c, -1))
        ih, iw = index
        v = v.gather(2, ih[:, None, :, None].expand(b, c, -1, v.shape[3]))
        return v.gather(3, iw[:, None, None, :].expand(b, c, v.shape[2], -1))

    def _resample(self, x: torch.Tensor, y: torch.Tensor, coords: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample x (and a field y) at per-sample positions ``coords`` ((B, n) in [-1, 1], one
        per spatial axis, separable) by linear interpolation."""
        grid = sampling_grid(coords)
        x = grid_resample(x, grid)
        if self.fields:
            y = grid_resample(y, grid)
        return x, y

    def time_warp(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coords = []
        for n in x.shape[2:]:
            knots = (1 + WARP_SIGMA * self._randn(len(x), 1, WARP_KNOTS + 2, like=x)).clamp(min=0.1)
            speed = F.interpolate(knots, size=n, mode="linear", align_corners=True)[:, 0]  # (B, n)
            t = speed.cumsum(1) - speed[:, :1]  # (B, n), monotone from 0
            t = t / t[:, -1:].clamp(min=1e-6)
            coords.append(2 * t - 1 if n > 1 else torch.zeros_like(t))
        return self._resample(x, y, coords)

    def window_slice(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coords = []
        for n in x.shape[2:]:
            start = (1 - WINDOW) * self._rand(len(x), 1, like=x)  # (B, 1) in [0, 0.1)
            t = start + WINDOW * torch.linspace(0, 1, n, device=x.device, dtype=x.dtype)  # (B, n)
            coords.append(2 * t - 1)
        return self._resample(x, y, coords)

    # ------------------------------------------------------------------ amplitude
    def magnitude_warp(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, *spatial = x.shape
        k = WARP_KNOTS + 2
        knots = 1 + WARP_SIGMA * self._randn(b, c, *([k] * len(spatial)), like=x)
        size = spatial if len(spatial) == 2 else [1, spatial[0]]
        knots = knots if len(spatial) == 2 else knots[:, :, None]  # (B, C, 1|k, k)
        curve = F.interpolate(knots, size=size, mode="bicubic", align_corners=True)
        return x * curve.reshape(x.shape), y

    def scaling(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = 1 + SCALING_SIGMA * self._randn(*x.shape[:2], *([1] * (x.ndim - 2)), like=x)
        return x * factor, y

    def jitter(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + JITTER_SIGMA * self._randn(*x.shape, like=x), y

    # ------------------------------------------------------------------ mixing two samples
    def _perm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randperm(len(x), generator=self.generator, device=x.device)

    def mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Mix | None]:
        from scipy.special import betaincinv

        perm = self._perm(x)
        # Beta(0.2, 0.2) by its inverse CDF: torch's Beta sampler takes no generator
        lam = float(betaincinv(MIXUP_ALPHA, MIXUP_ALPHA, self._rand(1, like=x).item()))
        x = lam * x + (1 - lam) * x[perm]
        if self.fields:
            return x, lam * y + (1 - lam) * y[perm], None
        return x, y, (perm, lam)

    def cutmix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Mix | None]:
        perm = self._perm(x)
        spatial = x.shape[2:]
        share = self._rand(1, like=x).item()  # Beta(1, 1): the pasted share of the area
        side = share ** (1 / len(spatial))
        index: list[slice] = [slice(None), slice(None)]
        pasted = 1.0
        for n in spatial:
            size = int(round(side * n))
            start = int(self._rand(1, like=x).item() * (n - size + 1))
            index.append(slice(start, start + size))
            pasted *= size / n
        x = x.clone()
        x[tuple(index)] = x[perm][tuple(index)]
        if self.fields:
            y = y.clone()
            y[tuple(index)] = y[perm][tuple(index)]
            return x, y, None
        return x, y, (perm, 1.0 - pasted)


TRANSFORMS: dict[str, Callable] = {
    "roll": BatchAugment.roll, "time-warp": BatchAugment.time_warp, "window-slice": BatchAugment.window_slice,
    "magnitude-warp": BatchAugment.magnitude_warp, "scaling": BatchAugment.scaling,
    "jitter": BatchAugment.jitter,
}
MIX_TRANSFORMS: dict[str, Callable] = {"mixup": BatchAugment.mixup, "cutmix": BatchAugment.cutmix}


def sampling_grid(coords: list[torch.Tensor]) -> torch.Tensor:
    """Separable per-axis positions ((B, n) each, [-1, 1]) -> a grid_sample grid (B, H, W, 2);
    a series is a field of height 1."""
    if len(coords) == 1:
        (cw,) = coords
        ch = torch.zeros_like(cw[:, :1])  # (B, 1)
    else:
        ch, cw = coords
    b, h, w = len(cw), ch.shape[1], cw.shape[1]
    return torch.stack([cw[:, None, :].expand(b, h, w), ch[:, :, None].expand(b, h, w)], dim=-1)


def grid_resample(v: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, L) or (B, C, H, W) sampled at ``grid`` (B, H, W, 2), same shape and dtype."""
    flat = v[:, :, None] if v.ndim == 3 else v  # a series as (B, C, 1, L)
    out = F.grid_sample(flat.float(), grid.float(), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.reshape(v.shape).to(v.dtype)


def mixed_loss(loss: Callable[..., torch.Tensor], out: torch.Tensor, y: torch.Tensor,
               weights: list[torch.Tensor], mix: Mix | None) -> torch.Tensor:
    """The task's loss; for a mix, ``lam * loss(y) + (1 - lam) * loss(y[perm])`` (per-sample
    weights follow their samples)."""
    if mix is None:
        return loss(out, y, *weights)
    perm, lam = mix
    return lam * loss(out, y, *weights) + (1 - lam) * loss(out, y[perm], *(w[perm] for w in weights))


__all__ = ["parse_augment", "augment_names", "check_body", "check_task", "BatchAugment",
           "mixed_loss", "SERIES_TRANSFORMS", "IMAGE_TRANSFORMS"]
