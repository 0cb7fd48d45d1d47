"""Stage 1, "align": train only the embedder so embedded target data looks like the source.

Each step embeds a class-stratified chunk of the training data, passes it through the body's
own embedding module (what the first transformer block sees), mean-pools per sample and
takes the distance (an ``objectives.py`` entry: OTDD, MMD, L2) to the cached source reference. Only the embedder's
parameters move. The labels come from the task (``Task.alignment_labels``: the classes, or
k-means clusters of regression and dense targets). The stage runs in the one training loop
(``engine/loop.py``) with the same callbacks as every stage.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..config import FitConfig
from ..engine.loop import EpochEnd, LoopState, Stage, run_stage, start_state
from ..engine.optim import learning_rates
from .objectives import build_alignment
from .reference import source_reference

ALIGN_CHUNK = 256  # target points per step: 1 step per epoch on small sets


def target_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean-pooled first-block inputs of the target data: (B, D)."""
    tokens = model.embedder(x)  # (B, S, D)
    return model.body.embed_tokens(tokens, model.embedder.grid).mean(1)


@torch.no_grad()
def all_target_features(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """:func:`target_features` of every sample of ``x`` (on the CPU), ``ALIGN_CHUNK`` samples
    at a time on ``device``: (N, D) on the CPU."""
    return torch.cat([target_features(model, x[i:i + ALIGN_CHUNK].to(device)).cpu()
                      for i in range(0, len(x), ALIGN_CHUNK)])


def _chunks(y: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index chunks of about ``size``, each holding every class in proportion."""
    n_chunks = max(1, int(np.ceil(len(y) / size)))
    parts: list[list[int]] = [[] for _ in range(n_chunks)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, piece in enumerate(np.array_split(idx, n_chunks)):
            parts[j].extend(piece.tolist())
    return [np.asarray(p) for p in parts if p]


class AlignStage(Stage):
    """Embedder-only training on the distance to the source reference (no autocast: the OT
    numerics stay in fp32)."""

    name = "align"
    loss_name = "alignment distance"
    nan_advice = "try --align mmd or l2, or pass --on-nan skip"

    def __init__(self, model: nn.Module, x: torch.Tensor, labels: np.ndarray, aligner: Any,
                 cfg: FitConfig, accelerator: Any) -> None:
        self.model, self.aligner, self.method = model, aligner, cfg.align
        self.epochs = cfg.align_epochs
        # (N, C, *spatial) on the CPU: a step moves only its chunk to the device (a large
        # data set would not fit beside the model on a GPU)
        self.x_all = x
        self.labels = labels
        self.device = accelerator.device
        self.y_all = torch.from_numpy(labels).to(self.device)
        embedder = accelerator.unwrap_model(model).embedder
        self.params = list(embedder.parameters())
        (lr,) = learning_rates(cfg, ("head_lr",))  # the embedder's rate
        self.optimizer = accelerator.prepare(torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0))
        self.generators = {"chunks": torch.Generator().manual_seed(cfg.seed)}

    def batches(self, epoch: int):
        gen = self.generators["chunks"]
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        return _chunks(self.labels, ALIGN_CHUNK, rng)

    def batch_loss(self, idx: np.ndarray) -> tuple[torch.Tensor, int]:
        feats = target_features(self.model, self.x_all[idx].to(self.device))  # (b, D)
        return self.aligner.distance(feats, self.y_all[idx]), len(idx)

    def end_epoch(self, state: LoopState, losses: list[tuple[float, int]], skipped: int) -> EpochEnd:
        values = [v for v, _ in losses]
        return EpochEnd({"method": self.method,
                         "distance": float(np.mean(values)) if values else float("nan"),
                         "skipped_steps": skipped})

    def describe(self) -> str:
        return f"align ({self.method})"

    def postfix(self, end: EpochEnd) -> dict[str, str]:
        return {"distance": f"{end.record['distance']:.4g}"}


def align(model: nn.Module, x: np.ndarray, labels: np.ndarray, cfg: FitConfig, body_path: str,
          accelerator: Any, log: Callable[[dict[str, Any]], None] | None = None,
          progress: bool = True, checkpointer=None, resume: dict[str, Any] | None = None,
          callbacks: Any = ()) -> dict[str, Any]:
    """Run ``cfg.align_epochs`` epochs of embedder alignment; returns the stage's record.

    The record holds the per-epoch distances and the target/source features before and after
    (for the report's 2-D projection). ``model`` is already prepared by ``accelerator``.
    """
    from ..engine.callbacks import standard_callbacks

    device = accelerator.device
    inner = accelerator.unwrap_model(model)
    xs, ys = source_reference(inner.body, body_path, seed=cfg.seed)
    xs, ys = xs.to(device), ys.to(device)
    aligner = build_alignment(cfg.align, xs, ys, cfg)
    xt_all = torch.from_numpy(x)  # stays on the CPU (AlignStage)
    stage = AlignStage(inner, xt_all, labels, aligner, cfg, accelerator)
    body_flags = [(p, p.requires_grad) for p in inner.body.parameters()]
    for p, _ in body_flags:  # no gradient work for the body in this stage
        p.requires_grad_(False)
    state = start_state(stage, accelerator, resume)  # last: it puts back the RNG states
    # "before" is only meaningful for a stage started from scratch
    before = all_target_features(inner, xt_all, device) if state.epoch == 0 else None
    callbacks = standard_callbacks(accelerator=accelerator, on_nan=cfg.on_nan,
                                   checkpointer=checkpointer, log=log, progress=progress,
                                   extra=callbacks)
    state = run_stage(stage, state, accelerator, callbacks)
    for p, flag in body_flags:
        p.requires_grad_(flag)
    after = all_target_features(inner, xt_all, device)
    return {"history": state.history, "before": before, "after": after,
            "source": xs.cpu(), "source_labels": ys.cpu(), "target_labels": labels}
