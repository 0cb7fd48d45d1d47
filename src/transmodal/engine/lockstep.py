"""Stages trained side by side, one epoch each in turn, and one epoch chosen for all of them.

Why (``--fold-epoch common``, issue 16): a k-fold run that keeps each fold model's best epoch
on its own fold chooses that epoch on the very samples it then scores out of fold; on 7-sample
folds the transformer's out-of-fold accuracy ran +5 points above its test accuracy (ArrowHead
+11 to +23). One epoch for every fold model, chosen on the pooled out-of-fold curve (all
training samples at once), needs every fold's validation outputs at each epoch *and* every
fold's weights at the chosen epoch. Training the folds side by side gives both while keeping
one snapshot per fold (sequential folds would need a snapshot of every epoch, or a second pass).

Each lane keeps its own global RNG state (dropout draws from it), swapped in for its epoch, so
a fold trains bit for bit as it does alone (tested); only the choice of epoch differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .callbacks import CallbackList, copy_weights
from .loop import EpochEnd, LoopState, Stage, run_epoch


def torch_rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The global torch RNG state: CPU, and every CUDA device once CUDA is in use (asking an
    uninitialised CUDA for its state would start a context on every GPU of a CPU run, and its
    generators have drawn nothing yet). Checkpoints store the same pair."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)


def set_torch_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    """Put back a :func:`torch_rng_state`; CUDA's part only where CUDA is in use (a GPU run's
    model is on the device by then), so a CPU run never starts a context."""
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(cuda)


@dataclass
class Lane:
    """One stage of a lockstep run: its loop state, its callbacks (no model selection or early
    stopping of its own: :class:`CommonEpoch` does both), the RNG state it left off with, and
    its validation targets (user's labels, encoded, sample weights or None)."""

    stage: Stage
    state: LoopState
    callbacks: CallbackList
    val_true: np.ndarray
    val_enc: np.ndarray
    val_weight: np.ndarray | None = None
    rng: Any = field(default_factory=torch_rng_state)  # captured when the lane is set up


class CommonEpoch:
    """Model selection on the pooled validation curve of several lanes: after every round the
    lanes' validation outputs are scored together (the task's scores and loss, ``Task.compare``:
    a tie goes to the later epoch); at an improvement or a tie every lane's weights are copied.
    Early stopping when the kept round is ``patience`` rounds old (0: never), as ``EarlyStopping``."""

    def __init__(self, task: Any, lanes: Sequence[Lane], accelerator: Any, patience: int) -> None:
        self.task, self.lanes, self.accelerator, self.patience = task, lanes, accelerator, patience
        self.best_epoch, self.best_val, self.bad_epochs = -1, None, 0
        self.curve: list[dict[str, float]] = []  # the pooled scores per epoch
        self.weights: list[dict | None] = [None] * len(lanes)

    def pooled_scores(self, outputs: Sequence[np.ndarray]) -> dict[str, float]:
        raw = np.concatenate(outputs)  # (N_val of all lanes, ...)
        y_true = np.concatenate([lane.val_true for lane in self.lanes])
        y_enc = torch.from_numpy(np.concatenate([lane.val_enc for lane in self.lanes]))
        w = () if self.lanes[0].val_weight is None else (
            np.concatenate([lane.val_weight for lane in self.lanes]),)
        loss = float(self.task.loss(torch.from_numpy(raw), y_enc, *(torch.from_numpy(v) for v in w)))
        return {**self.task.score_outputs(y_true, raw, *w), "loss": loss}

    def end_round(self, epoch: int, ends: Sequence[EpochEnd]) -> bool:
        """Score epoch ``epoch`` (1-based) of all lanes; True: stop all lanes."""
        scores = self.pooled_scores([end.outputs for end in ends])
        self.curve.append(scores)
        verdict = self.task.compare(scores, self.best_val)
        if verdict >= 0:
            self.best_epoch, self.best_val = epoch, scores
            for i, (lane, end) in enumerate(zip(self.lanes, ends)):
                self.weights[i] = copy_weights(self.accelerator.unwrap_model(lane.stage.model),
                                               self.weights[i])
                lane.state.best_epoch, lane.state.best_val = epoch, end.scores
        self.bad_epochs = 0 if verdict >= 0 else self.bad_epochs + 1
        return bool(self.patience and self.bad_epochs >= self.patience)

    def finish(self) -> None:
        """Every lane's model ends with the weights of the chosen epoch."""
        for lane, weights in zip(self.lanes, self.weights):
            if weights is not None:
                self.accelerator.unwrap_model(lane.stage.model).load_state_dict(weights)


def run_in_lockstep(lanes: Sequence[Lane], accelerator: Any, selection: CommonEpoch,
                    progress: Any = None) -> None:
    """Train all lanes epoch by epoch (lane 1's epoch e, lane 2's, ..., then epoch e + 1),
    choose the common epoch with ``selection`` and leave every model at it. ``progress``: a
    tqdm-like bar updated once a round (or None)."""
    for lane in lanes:
        lane.callbacks.on_stage_begin(lane.stage, lane.state, 0)
    epochs = max(lane.stage.epochs for lane in lanes)
    for epoch in range(epochs):
        ends = []
        for lane in lanes:
            set_torch_rng_state(lane.rng)
            ends.append(run_epoch(lane.stage, lane.state, accelerator, lane.callbacks, epoch))
            lane.rng = torch_rng_state()
            lane.stage.optimizer.zero_grad(set_to_none=True)  # K models: free the gradients
        stop = selection.end_round(epoch + 1, ends)
        if progress is not None:
            metric = selection.task.primary[0]
            progress.update(1)
            progress.set_postfix({metric: f"{selection.curve[-1][metric]:.3f}",
                                  "best epoch": selection.best_epoch})
        if stop:
            for lane in lanes:
                lane.state.stopped = True
            break
    for lane in lanes:
        lane.callbacks.on_stage_end(lane.stage, lane.state)
    selection.finish()
