"""Budgets and fit planning: equal optimizer steps per data set, epochs from steps, and the
suite's wall-time estimate.

- **budget**: every deep fit of a data set gets the same number of optimizer steps
  (``SUITE_BUDGETS``: steps, batch size, token cap; epochs = steps / steps-per-epoch, early
  stopping off, the best-validation epoch kept), so methods are compared at equal compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from transmodal.errors import TransmodalError

if TYPE_CHECKING:  # suite_data imports the budgets from here
    from transmodal.bench.suite_data import SuiteData


@dataclass(frozen=True)
class Budget:
    """Per data set: optimizer steps per deep fit, batch size and token cap."""

    steps: int
    batch_size: int = 16
    max_tokens: int = 32


# Chosen so that the full suite (7 sets x 5 methods x 3 seeds = 105 fits) fits in 60 minutes on
# 2 uncontended CPU cores with MiniLM. One GunPoint epoch (40 samples x 50 tokens, fully fine-tuned)
# takes ~1.1 s there, i.e. ~100-130 GFLOP/s of training; a step of batch 16 x 32 tokens is then
# ~0.3 s fully fine-tuned and ~2/3 of that with a frozen body (no weight gradients in the body).
# Budgets of 40-100 steps (~250k training sample-tokens per method over the 7 sets) give ~35 min
# of training, ~6 min of validation/test passes, ~5 min of model builds and FLOP counts and ~1 min
# of baselines: ~47 min, leaving ~13 min for ORCA's align stage once it lands.
# 32 tokens (not the fit default 64) halves the step time; every series here is <= 427 points, so
# patches stay <= 14 points. Steps go where the data need them: the small hard sets (ArrowHead,
# OSULeaf) get more, BasicMotions (solved by every method in DESIGN.md) fewer.
SUITE_BUDGETS: dict[str, Budget] = {
    "ArrowHead": Budget(steps=80),          # 29 train -> 2 steps/epoch -> 40 epochs, 32 tokens
    "GunPoint": Budget(steps=72),           # 40 train -> 3 steps/epoch -> 24 epochs, 30 tokens
    "ItalyPowerDemand": Budget(steps=80),   # 54 train -> 4 steps/epoch -> 20 epochs, 24 tokens
    "OSULeaf": Budget(steps=100),           # 160 train -> 10 steps/epoch -> 10 epochs, 31 tokens
    "BasicMotions": Budget(steps=40),       # 32 train -> 2 steps/epoch -> 20 epochs, 25 tokens
    "digits": Budget(steps=69, batch_size=32, max_tokens=16),  # 718 -> 23/epoch -> 3 epochs, 2x2 patches
    "burgers": Budget(steps=78),            # 205 train -> 13 steps/epoch -> 6 epochs, 32 tokens
}
DEFAULT_BUDGET = Budget(steps=100)  # --data sets not named above
QUICK_STEPS = 30
QUICK_ALIGN_EPOCHS = 2

# Estimate of the suite's wall time: analytic matmul FLOPs of the body at an assumed share of
# the measured matmul rate, plus a fixed cost per fit (model build, FLOP count, test pass).
ASSUMED_UTILISATION = 0.6
FIXED_SECONDS_PER_FIT = 3.0


@dataclass
class FitPlan:
    n_train: int  # after the validation split
    n_val: int
    n_test: int
    batch_size: int
    max_tokens: int
    tokens: int
    steps_per_epoch: int
    epochs: int

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def plan_fit(data: SuiteData, budget: Budget, body_max_tokens: int | None = None,
             epochs: int | None = None, val_fraction: float = 0.2) -> FitPlan:
    """Epochs from the step budget, with the same validation split rule as ``fit``."""
    from transmodal.models.embedder import plan_patches, token_grid
    from transmodal.tasks import get_task

    ds = data.dataset
    n = len(ds.y_train)
    n_val = max(1, int(round(val_fraction * n)))
    n_val = max(n_val, get_task(data.task).min_validation(ds.y_train))
    n_train = n - n_val
    per_epoch = math.ceil(n_train / budget.batch_size)
    if epochs is None:
        epochs = max(1, round(budget.steps / per_epoch))
    cap = budget.max_tokens if body_max_tokens is None else min(budget.max_tokens, body_max_tokens)
    spatial = tuple(ds.x_train.shape[2:])
    tokens = int(np.prod(token_grid(spatial, plan_patches(spatial, cap))))
    return FitPlan(n_train, n_val, len(ds.y_test), budget.batch_size, budget.max_tokens, tokens,
                   per_epoch, epochs)


def _body_dims(body: str) -> tuple[int, int, int, int] | None:
    """(hidden, layers, intermediate, max positions) of a transformer body, None if unknown."""
    try:
        from transmodal.models.bodies.hf import load_body_config

        cfg = load_body_config(body)
    except TransmodalError:
        return None
    try:
        d, layers, inter = int(cfg.hidden_size), int(cfg.num_hidden_layers), int(cfg.intermediate_size)
    except (AttributeError, TypeError):
        return None
    offset = 2 if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    positions = int(getattr(cfg, "max_position_embeddings", 10**6)) - offset
    if getattr(cfg, "model_type", "") == "vit":
        positions = (int(cfg.image_size) // int(cfg.patch_size)) ** 2
    return d, layers, inter, positions


def estimate_fit_seconds(plan: FitPlan, dims: tuple[int, int, int, int], tune: str,
                         matmul_rate: float) -> float:
    """Rough wall time of one fit: analytic body FLOPs (QKV/O and MLP matmuls, attention) at
    ``ASSUMED_UTILISATION`` of the measured matmul rate, plus ``FIXED_SECONDS_PER_FIT``.
    A frozen body still back-propagates to the embedder (input gradients, no weight
    gradients): about 2 forward passes a step instead of 3. The align stage is not included."""
    d, layers, inter, _ = dims
    s = plan.tokens
    fwd_token = 2 * layers * (4 * d * d + 2 * d * inter) + 4 * layers * s * d
    factor = 2.0 if tune in ("frozen", "layernorm", "lora") else 3.0
    flops = fwd_token * s * (factor * plan.steps * plan.batch_size
                             + plan.epochs * plan.n_val + plan.n_test)
    return flops / (matmul_rate * ASSUMED_UTILISATION) + FIXED_SECONDS_PER_FIT
