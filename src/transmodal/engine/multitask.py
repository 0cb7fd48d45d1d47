"""The multi-task refine stage: one model trained on batches of several tasks.

Mixing: every batch holds samples of one task (the instruction, the input shape and the label
trie are the task's, so a batch needs no padding). Each epoch every task's shuffled loader is
run once, and the order of all the epoch's batches is a seeded random permutation: tasks are
sampled in proportion to their number of batches, and every sample is seen once per epoch.

Validation: each task's validation split scored on its own; the stage's score (which picks the
best epoch and drives early stopping) is the *mean over tasks* of each metric, so every task
counts the same whatever its size. The per-task scores are logged as ``val_NAME:metric``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..tasks import get_task
from .loop import EpochEnd, LoopState, Stage, dataset_of, predict_outputs
from .optim import build_optimizer, learning_rates, lr_factor


@dataclass
class TaskSplit:
    """One task's preprocessed training and validation data."""

    name: str
    task: Any  # its fitted Classification (generate head)
    x_tr: np.ndarray
    y_tr: np.ndarray  # encoded targets
    x_va: np.ndarray
    y_va: np.ndarray
    y_va_true: np.ndarray  # labels in the user's space (scored)


class MultiTaskStage(Stage):
    name = "refine"

    def __init__(self, model: Any, splits: list[TaskSplit], cfg: Any, accelerator: Any) -> None:
        """``model`` (a MultiTaskModel) is already prepared by ``accelerator``."""
        from ..models.multitask import TaskView

        self.model, self.accelerator, self.splits = model, accelerator, {s.name: s for s in splits}
        self.unwrapped = accelerator.unwrap_model(model)
        self.views = {s.name: TaskView(self.unwrapped, s.name) for s in splits}
        self.epochs, self.grad_clip, self.eval_batch = cfg.epochs, cfg.grad_clip, cfg.batch_size * 2
        gen = torch.Generator().manual_seed(cfg.seed)
        self.generators = {"loader": gen}  # the loaders' shuffles and the batch order
        self.loaders = {s.name: DataLoader(dataset_of(s.x_tr, torch.from_numpy(s.y_tr)),
                                           batch_size=cfg.batch_size, shuffle=True, generator=gen)
                        for s in splits}
        optimizer = build_optimizer(self.unwrapped, *learning_rates(cfg), cfg.weight_decay,
                                    cfg.fused_adamw)
        steps = cfg.epochs * sum(len(loader) for loader in self.loaders.values())
        fraction, least = get_task("classification").warmup_rule(cfg)  # every task classifies
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(steps, fraction, cfg.schedule, least))
        self.optimizer = accelerator.prepare(optimizer)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def batches(self, epoch: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        order = [name for name, loader in self.loaders.items() for _ in range(len(loader))]
        perm = torch.randperm(len(order), generator=self.generators["loader"]).tolist()
        its = {name: iter(loader) for name, loader in self.loaders.items()}
        device = self.accelerator.device
        for i in perm:
            xb, yb = next(its[order[i]])
            yield order[i], xb.to(device), yb.to(device)

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        name, xb, yb = batch
        with self.accelerator.autocast():
            out = self.model(xb, name)  # (B, K_t, 4)
        return self.splits[name].task.loss(out, yb), len(xb)

    def validate(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(mean over tasks of each metric and of the loss, per-task scores)."""
        per: dict[str, dict[str, float]] = {}
        for name, s in self.splits.items():
            raw = predict_outputs(self.views[name], s.x_va, self.eval_batch, self.accelerator)
            loss = float(s.task.loss(torch.from_numpy(raw), torch.from_numpy(s.y_va)))
            per[name] = {**s.task.score_outputs(s.y_va_true, raw), "loss": loss}
        keys = [k for k in next(iter(per.values())) if all(k in p for p in per.values())]
        return {k: float(np.mean([p[k] for p in per.values()])) for k in keys}, per

    def end_epoch(self, state: LoopState, losses: list[tuple[float, int]], skipped: int) -> EpochEnd:
        total = sum(v * n for v, n in losses)
        count = sum(n for _, n in losses)
        mean, per = self.validate()
        scores = {**mean, **{f"{name}:{k}": v for name, p in per.items() for k, v in p.items()}}
        lrs = self.scheduler.get_last_lr()
        record = {"train_loss": total / max(count, 1), "val_loss": mean["loss"],
                  **{f"val_{k}": v for k, v in scores.items() if k != "loss"},
                  "lr": lrs[0], "head_lr": lrs[-1], "skipped_batches": skipped}
        return EpochEnd(record, scores)

    def postfix(self, end: EpochEnd) -> dict[str, str]:
        return {"loss": f"{end.record['train_loss']:.3f}", "accuracy": f"{end.scores['accuracy']:.3f}"}


def split_scores(scores: dict[str, float] | None
                 ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The stage's flat scores -> (means without the loss, per task without the loss)."""
    mean: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {}
    for k, v in (scores or {}).items():
        if ":" in k:
            name, metric = k.rsplit(":", 1)
            if metric != "loss":
                per.setdefault(name, {})[metric] = v
        elif k != "loss":
            mean[k] = v
    return mean, per


def train_multitask(model: Any, splits: list[TaskSplit], cfg: Any, accelerator: Any,
                    log: Any = None, progress: bool = True, callbacks: Any = ()) -> LoopState:
    """Run the stage; the model ends with the best epoch's weights (mean validation accuracy)."""
    from .callbacks import standard_callbacks
    from .loop import run_stage

    stage = MultiTaskStage(model, splits, cfg, accelerator)
    cbs = standard_callbacks(accelerator=accelerator, on_nan=cfg.on_nan, checkpointer=None,
                             log=log, progress=progress, task=splits[0].task,
                             patience=cfg.patience, extra=callbacks)
    return run_stage(stage, LoopState(), accelerator, cbs)
