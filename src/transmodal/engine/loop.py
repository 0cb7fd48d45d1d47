"""One training loop for every stage (align, refine, and the stages to come).

A stage says what is its own business: its batches, the loss of one batch (forward pass and
objective), and what an epoch reports (e.g. validation scores). The loop does the rest, the
same way for every stage: train mode, zero-grad, the non-finite check (agreed by every
process: a loss that is non-finite on one rank makes all skip or all stop), backward through the
accelerator, gradient norm and clipping, optimizer and scheduler steps, step counting, and the
epoch record. Everything else is a callback (``callbacks.py``: progress bar, metrics log,
non-finite policy, best epoch, early stopping, checkpoints), skorch-style; callbacks that
write files run on the main process only.

Exact resume: ``start_state`` restores a stage's checkpoint (weights, optimizer, scheduler, RNG
states) after the stage was set up, so that the resumed run draws the same batches and dropout
masks as an uninterrupted one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import TransmodalError
from .optim import grad_norm


class NonFiniteError(TransmodalError):
    """Loss or gradient became NaN/inf."""


@dataclass
class LoopState:
    """Everything the loop carries from epoch to epoch (what a resume must restore)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_epoch: int = -1
    best_val: dict[str, float] | None = None
    bad_epochs: int = 0  # epochs since the kept (best or tied) epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_batches: int = 0  # batches dropped by --on-nan skip
    stopped: bool = False  # early stopping ended the stage
    # best weights so far (BestEpoch); saved in checkpoints beside, not inside, the state
    best_weights: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("best_weights")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        """Also reads the smaller align-stage state of earlier versions (history and step)."""
        known = {f.name for f in fields(cls)} - {"best_weights"}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class EpochEnd:
    """What a stage reports at the end of an epoch."""

    record: dict[str, Any]  # the stage's fields of the metrics.jsonl line
    scores: dict[str, float] | None = None  # validation scores (model selection), if any
    outputs: Any = None  # the validation raw outputs (N_val, ...) the scores came from, if any


class Stage(ABC):
    """One stage's business. Set up everything that draws random numbers in ``__init__``."""

    name: str  # "align" | "refine": the checkpoint's stage and the log's "stage"
    epochs: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    params: list[nn.Parameter]  # whose gradient norm is checked (and clipped)
    grad_clip: float = 0.0  # 0: no clipping
    generators: dict[str, torch.Generator]  # named RNGs a resume must restore
    loss_name: str = "loss"  # what a non-finite loss is called in messages
    nan_advice: str = "lower --lr or check the data scale, or pass --on-nan skip"

    @abstractmethod
    def batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of one epoch."""

    @abstractmethod
    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """(scalar loss, samples in the batch) for one batch: forward pass and objective."""

    @abstractmethod
    def end_epoch(self, state: LoopState, losses: list[tuple[float, int]], skipped: int) -> EpochEnd:
        """The epoch's record from its (loss, samples) per step; validation happens here."""

    def describe(self) -> str:
        return self.name

    def postfix(self, end: EpochEnd) -> dict[str, str]:
        """Short progress-bar values."""
        return {}

    def backward(self, accelerator, loss: torch.Tensor) -> None:
        accelerator.backward(loss)


def start_state(stage: Stage, accelerator, resume: dict[str, Any] | None) -> LoopState:
    """A fresh state, or the checkpoint ``resume`` of this stage restored into ``stage``."""
    if resume is None:
        return LoopState()
    from ..run.checkpoint import restore

    restore(resume, model=accelerator.unwrap_model(stage.model), optimizer=stage.optimizer,
            scheduler=stage.scheduler, scaler=accelerator.scaler, generators=stage.generators)
    state = LoopState.from_dict(resume["state"])
    state.epoch = int(resume["epoch"])
    state.best_weights = resume.get("best_model")
    if state.best_weights is not None and resume.get("sharded"):  # kept sharded, as in training
        from .distributed import local_weights

        state.best_weights = local_weights(state.best_weights, accelerator.unwrap_model(stage.model))
    return state


def run_stage(stage: Stage, state: LoopState, accelerator, callbacks: Sequence[Any] = ()) -> LoopState:
    """Train ``stage`` from ``state`` to its last epoch (or until a callback stops it)."""
    from .callbacks import CallbackList

    cbs = CallbackList(callbacks)
    start = stage.epochs if state.stopped else state.epoch
    cbs.on_stage_begin(stage, state, start)
    for epoch in range(start, stage.epochs):
        run_epoch(stage, state, accelerator, cbs, epoch)
        if state.stopped:
            break
    cbs.on_stage_end(stage, state)
    return state


def run_epoch(stage: Stage, state: LoopState, accelerator, cbs: Any, epoch: int) -> EpochEnd:
    """One epoch of ``stage`` (0-based ``epoch``): its steps, its report, the callbacks'
    ``on_epoch_end``. ``cbs``: a ``CallbackList``. Stages trained side by side
    (``lockstep.py``) call it in turn."""
    processes = getattr(accelerator, "num_processes", 1)
    t0 = time.perf_counter()
    stage.model.train()
    losses: list[tuple[float, int]] = []
    skipped = 0
    for batch in stage.batches(epoch):
        loss, n = stage.batch_loss(batch)
        stage.optimizer.zero_grad(set_to_none=True)
        bad = None if torch.isfinite(loss) else stage.loss_name
        if processes > 1:  # every rank skips (or stops at) a batch that one rank cannot train
            from .distributed import agree_nonfinite

            bad = agree_nonfinite(bad is not None, loss.device, stage.loss_name, processes)
        if bad is None:
            stage.backward(accelerator, loss)
            norm = grad_norm(accelerator, stage.params, stage.grad_clip)
            bad = None if norm is None or torch.isfinite(norm) else "gradient"
        if bad is not None:
            cbs.on_nonfinite(stage, state, epoch, bad)  # raises unless the batch may be dropped
            stage.optimizer.zero_grad(set_to_none=True)  # drop it: no optimizer/scheduler step
            skipped += 1
            continue
        stage.optimizer.step()
        if stage.scheduler is not None:
            stage.scheduler.step()
        state.step += 1
        losses.append((loss.item(), n))
    state.skipped_batches += skipped
    state.epoch = epoch + 1
    end = stage.end_epoch(state, losses, skipped)
    end.record = {"stage": stage.name, "epoch": state.epoch, "step": state.step, **end.record,
                  "seconds": time.perf_counter() - t0}
    state.history.append(end.record)
    cbs.on_epoch_end(stage, state, end)
    return end


class RowsDataset(torch.utils.data.Dataset):
    """Samples read per batch from inputs on disk (``data/stream.py``: a view whose reads
    are normalised) beside in-memory tensors (targets, weights). A batch is one read of its
    rows; the items are those of a TensorDataset, so the loader's seeded sampler and collation
    give the same batches as for the same inputs in memory."""

    def __init__(self, x: Any, *tensors: torch.Tensor) -> None:
        self.x, self.tensors = x, tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.__getitems__([i])[0]

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, ...]]:
        xb = torch.from_numpy(self.x.read(np.asarray(idx)))  # (B, C, *spatial)
        return [(xb[j], *(t[i] for t in self.tensors)) for j, i in enumerate(idx)]


def dataset_of(x: Any, *tensors: torch.Tensor) -> torch.utils.data.Dataset:
    """A TensorDataset for inputs in memory, a :class:`RowsDataset` for inputs on disk."""
    if isinstance(x, np.ndarray):
        return torch.utils.data.TensorDataset(torch.from_numpy(x), *tensors)
    return RowsDataset(x, *tensors)


@torch.no_grad()
def predict_outputs(model: nn.Module, x: np.ndarray, batch_size: int, accelerator,
                    shard: bool = False) -> np.ndarray:
    """Raw model outputs (logits / standardised values) for preprocessed x, in batches
    (x: an array, or a view of inputs on disk whose slices are read and normalised).
    ``shard``: called by every process at once (validation, test scores), so with several
    processes each predicts a shard and all gather (``distributed.py``)."""
    if shard and accelerator.num_processes > 1:
        from .distributed import predict_sharded

        return predict_sharded(model, x, batch_size, accelerator)
    model.eval()
    outs = []
    for i in range(0, len(x), max(1, batch_size)):
        xb = torch.from_numpy(x[i: i + batch_size]).to(accelerator.device)
        with accelerator.autocast():
            outs.append(model(xb).float().cpu())
    return torch.cat(outs).numpy()
