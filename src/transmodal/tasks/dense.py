"""Dense: one value (or several channels) per time step or pixel; relative L2 picks the epoch."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from . import register_task
from .base import Task, mse, weighted_mean


def rel_l2(pred: Any, true: Any, sample_weight: Any = None) -> float:
    """Mean over samples of ||pred - true|| / ||true|| (each sample flattened): the dense score.

    The usual PDE-surrogate error. Takes numpy arrays or anything ``np.asarray`` takes; the
    first axis indexes samples.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise DataError(f"prediction shape {p.shape} does not match target shape {t.shape}")
    if p.ndim < 1 or p.shape[0] == 0:
        raise DataError("rel_l2 needs at least one sample")
    p = p.reshape(p.shape[0], -1)
    t = t.reshape(t.shape[0], -1)
    norms = np.linalg.norm(t, axis=1)
    if np.any(norms == 0):
        raise DataError("rel_l2 is undefined for a target that is identically zero")
    errors = np.linalg.norm(p - t, axis=1) / norms
    return float(np.mean(errors) if sample_weight is None else np.average(errors, weights=sample_weight))


def _channel_shape(ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts one value per channel over (N, K, *spatial) of rank ``ndim``."""
    return (1, -1) + (1,) * (ndim - 2)


@register_task
class Dense(Task):
    name = "dense"
    head = "dense"
    primary = ("rel_l2", False)
    infer_rank = 0  # first: y shaped like the input grid is dense whatever its dtype
    view = "fields"
    augment_targets = "fields"
    # 10x the others': a field-to-field map underfits at 1e-4 / 1e-3 (burgers, 3 seeds at fit's
    # defaults: test rel L2 0.106 vs 0.125; every paired run on the dense sets agrees; README)
    learning_rates = (1e-3, 1e-2)
    # at least this many grid points per token by default: a token of 2 points underfits
    # (burgers, 128 points: 32 tokens 0.090 / 0.093 vs 64 tokens 0.106 / 0.111, seeds 0 / 1, in
    # half the time; 16 tokens 0.113; Darcy 32 x 32 keeps 64 tokens of 16 points, which beat 25
    # tokens of 49 points: 0.043 vs 0.053; README)
    points_per_token = 4
    # no hidden dropout: it adds noise to every output value of a field-to-field map (burgers,
    # 3 seeds at fit's defaults: test rel L2 0.059 ± 0.001 vs 0.078 ± 0.006 with MiniLM's 0.1;
    # README)
    dropout = 0.0
    # the 10x learning rates diverge after a warm-up of a few steps: at the suite's 78-step
    # budget (6 epochs, 8 warm-up steps) burgers scored 0.81 / 0.82 / 0.58 (3 seeds), with 39
    # warm-up steps 0.19 / 0.20 / 0.19; fit's 60 epochs warm up for 78 steps anyway (README)
    min_warmup_steps = 50
    # twice the optimizer steps of 16, lower error on every pair (fit's defaults otherwise:
    # burgers 0.049 / 0.051 vs 0.060 / 0.058, seeds 0 / 1; Burgers nu = 0.05 0.076 vs 0.093;
    # Darcy 0.039 vs 0.044; README)
    batch_size = 8
    # series_embedder stays patch: rocket's 0/1 shares per patch help a class read-out, not a
    # field map (burgers seed 0 at fit's defaults: test rel L2 0.132 with --embedder rocket vs
    # 0.049; README)

    def token_cap(self, spatial: Sequence[int] | None) -> int:
        if spatial is None:
            return self.max_tokens
        return max(1, min(self.max_tokens, math.prod(spatial) // self.points_per_token))

    def __init__(self, y_mean: list[float] | None = None, y_std: list[float] | None = None,
                 y_shape: list[int] | None = None, spatial_ndim: int = 1) -> None:
        self.y_mean = list(y_mean or [])  # per output channel
        self.y_std = list(y_std or [])
        self.y_shape = list(y_shape or [])  # per-sample target shape: (*spatial) or (K, *spatial)
        self.spatial_ndim = int(spatial_ndim)  # 1 for series, 2 for images
        self.loss_kind = "rel_l2"  # --dense-loss (training only: a loaded model needs no loss)

    def configure(self, cfg: Any) -> None:
        self.loss_kind = cfg.dense_loss

    def matches(self, x: np.ndarray, y: np.ndarray) -> bool:
        spatial = x.shape[2:]
        return y.ndim >= 2 and (y.shape[1:] == spatial or y.shape[2:] == spatial)

    def check_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        spatial = x.shape[2:]
        if not (y.shape[1:] == spatial or y.shape[2:] == spatial):
            raise DataError(
                f"dense task: y must be shaped like the input grid {spatial} (optionally with "
                f"channels first); got {y.shape[1:]}"
            )
        if y.dtype.kind not in "fiu":
            raise DataError("dense targets must be numeric")
        zero = np.flatnonzero(~np.abs(y.reshape(len(y), -1)).any(axis=1))
        if len(zero):
            raise DataError(
                f"dense target of sample {zero[0]} is identically zero, so its relative L2 error "
                "(the dense score) is undefined; drop such samples or offset the targets"
            )

    def check_eval_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        self.check_targets(x, y)

    def _channels_first(self, y: np.ndarray) -> np.ndarray:
        """(N, *spatial) -> (N, 1, *spatial); (N, K, *spatial) unchanged."""
        return y if y.ndim == self.spatial_ndim + 2 else y[:, None]

    def fit_targets(self, x: np.ndarray, y: np.ndarray) -> "Dense":
        self.spatial_ndim = x.ndim - 2
        yf = y.astype(np.float64)
        self.y_shape = list(y.shape[1:])
        yc = self._channels_first(yf)  # one scale per target channel
        ax = (0,) + tuple(range(2, yc.ndim))
        self.y_mean = yc.mean(axis=ax).tolist()
        s = yc.std(axis=ax)
        self.y_std = np.where(s > 1e-8, s, 1.0).tolist()
        return self

    def state(self) -> dict[str, Any]:
        return {"y_mean": self.y_mean, "y_std": self.y_std, "y_shape": self.y_shape}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Dense":
        # the spatial rank is that of the stored input shape (C, *spatial)
        return cls(d.get("y_mean"), d.get("y_std"), d.get("y_shape"), len(d["input_shape"]) - 1)

    @property
    def n_outputs(self) -> int:
        return len(self.y_mean)

    def encode(self, y: np.ndarray) -> np.ndarray:
        yc = self._channels_first(y.astype(np.float64))
        shape = _channel_shape(yc.ndim)
        mean = np.asarray(self.y_mean).reshape(shape)
        std = np.asarray(self.y_std).reshape(shape)
        return ((yc - mean) / std).astype(np.float32)

    def decode(self, raw: np.ndarray) -> np.ndarray:
        shape = _channel_shape(raw.ndim)
        y = raw * np.asarray(self.y_std).reshape(shape) + np.asarray(self.y_mean).reshape(shape)
        return y.reshape((len(y), *self.y_shape)) if self.y_shape else y

    def loss(self, out: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.loss_kind == "mse":
            return mse(out, target, weight)
        return self.rel_l2_loss(out, target, weight)

    def rel_l2_loss(self, out: torch.Tensor, target: torch.Tensor,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
        """Batch mean of each sample's relative L2 error in the targets' own units (what
        :func:`rel_l2` scores; neural-operator training uses the same), on standardised
        ``out`` and ``target`` (B, K, *spatial): MSE on standardised targets weighs a sample by
        its energy, this by its relative error."""
        shape = _channel_shape(out.ndim)
        std = torch.tensor(self.y_std, dtype=torch.float32, device=out.device).reshape(shape)
        mean = torch.tensor(self.y_mean, dtype=torch.float32, device=out.device).reshape(shape)
        error = ((out.float() - target) * std).flatten(1).norm(dim=1)  # (B,)
        size = (target * std + mean).flatten(1).norm(dim=1)  # (B,) never 0: check_targets
        per_sample = error / size
        return per_sample.mean() if weight is None else weighted_mean(per_sample, weight)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray,
              sample_weight: np.ndarray | None = None) -> dict[str, float]:
        return {"rel_l2": rel_l2(y_pred, y_true, sample_weight)}
