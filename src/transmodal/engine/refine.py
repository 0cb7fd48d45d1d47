"""The refine stage: train on the task's loss, validate every epoch (the task scores it).

AdamW (body and embedder/head learning rates apart, ``optim.py``), linear warm-up then cosine
decay or a constant rate (``--schedule``), gradient clipping; the best epoch, early stopping,
checkpoints and the non-finite policy are callbacks (``callbacks.py``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .augment import BatchAugment, mixed_loss
from .loop import EpochEnd, LoopState, Stage, dataset_of, predict_outputs
from .optim import build_optimizer, learning_rates, lr_factor


class RefineStage(Stage):
    name = "refine"

    def __init__(self, model: nn.Module, task: Any, train: tuple[np.ndarray, np.ndarray],
                 val: tuple[np.ndarray, np.ndarray], val_true: np.ndarray, cfg: Any,
                 accelerator: Any, weights: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """``model`` is already prepared by ``accelerator``; ``train`` and ``val`` hold
        preprocessed inputs (arrays, or views of inputs on disk read per batch) and encoded targets; ``val_true`` the validation labels in the
        user's label space (validation is scored in user units). ``weights``: per-sample
        weights of the training and validation samples (each with mean 1), or None; they
        weight the training loss, the validation loss and the validation scores."""
        x_tr, y_tr = train
        self.model, self.task, self.val, self.val_true = model, task, val, val_true
        self.unwrapped = accelerator.unwrap_model(model)  # the module the task's hooks reach into
        from .distributed import is_sharded

        self.sharded = is_sharded(self.unwrapped)  # --distributed fsdp
        self.val_weight = None if weights is None else weights[1]
        # the weights travel with their samples through the shuffled loader (same draws:
        # the sampler's permutation does not depend on how many tensors a sample holds)
        tensors = [torch.from_numpy(y_tr)]
        if weights is not None:
            tensors.append(torch.from_numpy(np.asarray(weights[0], dtype=np.float32)))
        self.accelerator = accelerator
        self.epochs = cfg.epochs
        self.grad_clip = cfg.grad_clip
        self.eval_batch = cfg.batch_size * 2
        gen = torch.Generator().manual_seed(cfg.seed)
        self.generators = {"loader": gen}
        # --augment: training batches only; "none" builds nothing and draws nothing
        augment = BatchAugment(cfg.augment, task.augment_targets, accelerator.device, cfg.seed)
        self.augment = augment if augment else None
        if self.augment is not None:
            self.generators["augment"] = self.augment.generator
        loader = DataLoader(dataset_of(x_tr, *tensors), batch_size=cfg.batch_size, shuffle=True, generator=gen)
        optimizer = build_optimizer(accelerator.unwrap_model(model), *learning_rates(cfg),
                                    cfg.weight_decay, cfg.fused_adamw)
        # optimizer steps per process: the prepared loader gives each of N processes every
        # N-th batch (the last ones padded), so the schedule spans ceil(batches / N) per epoch
        steps = cfg.epochs * -(-len(loader) // accelerator.num_processes)
        fraction, least = task.warmup_rule(cfg)  # --warmup, or the task's (dense: >= 50 steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(steps, fraction, cfg.schedule, least))
        self.optimizer, self.loader = accelerator.prepare(optimizer, loader)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def batches(self, epoch: int):
        return self.loader

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        xb, yb, *wb = batch  # wb: [weights] when sample weights were given
        mix = None
        if self.augment is not None:
            xb, yb, mix = self.augment(xb, yb)
        with self.task.training_batch(self.unwrapped, yb) as yb:
            with self.accelerator.autocast():
                out = self.model(xb)
        return mixed_loss(self.task.loss, out, yb, wb, mix), len(xb)

    def end_epoch(self, state: LoopState, losses: list[tuple[float, int]], skipped: int) -> EpochEnd:
        total, count = 0.0, 0
        for value, n in losses:
            total += value * n
            count += n
        if self.accelerator.num_processes > 1:  # the log holds the mean over every rank's samples
            from .distributed import global_mean_loss

            total, count = global_mean_loss(self.accelerator, total, count)
        if self.sharded:
            from .distributed import sync_buffers

            sync_buffers(self.unwrapped)
        lrs = self.scheduler.get_last_lr()  # groups: [body, embedder + head], or the latter alone
        record = {"train_loss": total / max(count, 1), "lr": lrs[0], "head_lr": lrs[-1],
                  "skipped_batches": skipped}
        x_va, y_va = self.val
        if len(y_va) == 0:  # --refit: all training data, nothing held out to score
            return EpochEnd(record)
        with self.task.scoring(self.unwrapped, self.val_true):
            raw = predict_outputs(self.model, x_va, self.eval_batch, self.accelerator, shard=True)
        w = () if self.val_weight is None else (self.val_weight,)
        val_loss = float(self.task.loss(torch.from_numpy(raw), torch.from_numpy(y_va),
                                        *(torch.from_numpy(v) for v in w)))
        scores = {**self.task.score_outputs(self.val_true, raw, *w), "loss": val_loss}
        record = {"train_loss": record["train_loss"], "val_loss": val_loss,
                  **{f"val_{k}": v for k, v in scores.items() if k != "loss"}, **record}
        return EpochEnd(record, scores, raw)

    def postfix(self, end: EpochEnd) -> dict[str, str]:
        metric = self.task.primary[0]
        shown = {"loss": f"{end.record['train_loss']:.3f}"}
        return shown if end.scores is None else {**shown, metric: f"{end.scores[metric]:.3f}"}


def refine(model: nn.Module, task: Any, train: tuple[np.ndarray, np.ndarray],
           val: tuple[np.ndarray, np.ndarray], val_true: np.ndarray, cfg: Any, accelerator: Any,
           log: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
           checkpointer: Any = None, resume: dict[str, Any] | None = None,
           weights: tuple[np.ndarray, np.ndarray] | None = None, callbacks: Any = (),
           select: bool = True) -> LoopState:
    """Run the refine stage; the model ends with the best validation epoch's weights
    (``select=False``: with its last epoch's, see :func:`refine_setup`).

    ``resume`` (a loaded ``"refine"`` checkpoint) continues from it exactly: same batches,
    dropout masks and optimizer state as without the break. ``weights``: (training,
    validation) sample weights, or None (see :class:`RefineStage`). ``callbacks``: more
    callbacks after the standard ones (trackers, pruning).
    """
    from .loop import run_stage

    stage, state, cbs = refine_setup(model, task, train, val, val_true, cfg, accelerator, log,
                                     progress, checkpointer, resume, weights, callbacks, select)
    return run_stage(stage, state, accelerator, cbs)


def refine_setup(model: nn.Module, task: Any, train: tuple[np.ndarray, np.ndarray],
                 val: tuple[np.ndarray, np.ndarray], val_true: np.ndarray, cfg: Any, accelerator: Any,
                 log: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
                 checkpointer: Any = None, resume: dict[str, Any] | None = None,
                 weights: tuple[np.ndarray, np.ndarray] | None = None, callbacks: Any = (),
                 select: bool = True) -> tuple[RefineStage, LoopState, list[Any]]:
    """The refine stage, its start state and its callbacks, ready for ``run_stage``.
    ``select=False``: no best epoch or early stopping of its own (a lockstep run's
    ``CommonEpoch`` chooses for all folds, ``lockstep.py``)."""
    from .callbacks import standard_callbacks
    from .loop import start_state

    stage = RefineStage(model, task, train, val, val_true, cfg, accelerator, weights)
    state = start_state(stage, accelerator, resume)  # last: it puts back the RNG states
    cbs = standard_callbacks(accelerator=accelerator, on_nan=cfg.on_nan,
                             checkpointer=checkpointer, log=log, progress=progress,
                             task=task if select else None, patience=cfg.patience, extra=callbacks)
    return stage, state, cbs
