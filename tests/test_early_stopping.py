"""Early stopping counts from the kept epoch: a tie is kept (the later epoch) and resets the
count; only epochs that score worse than the kept one bring the stop nearer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from transmodal.engine.callbacks import BestEpoch, EarlyStopping
from transmodal.engine.lockstep import CommonEpoch
from transmodal.engine.loop import EpochEnd, LoopState
from transmodal.tasks import get_task

ACCELERATOR = SimpleNamespace(unwrap_model=lambda m: m)


def _run(curve: list[float], patience: int) -> LoopState:
    """Feed a scripted validation-accuracy curve through the refine stage's selection callbacks;
    the model's weight holds the epoch number, so the loaded weights say which epoch was kept."""
    model = torch.nn.Linear(1, 1, bias=False)
    stage = SimpleNamespace(model=model)
    best, stop = BestEpoch(get_task("classification"), ACCELERATOR), EarlyStopping(patience)
    state = LoopState()
    best.on_stage_begin(stage, state, 0)
    for epoch, acc in enumerate(curve, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        state.epoch = epoch
        end = EpochEnd(record={}, scores={"accuracy": acc, "loss": 1.0})
        best.on_epoch_end(stage, state, end)
        stop.on_epoch_end(stage, state, end)
        if state.stopped:
            break
    best.on_stage_end(stage, state)
    assert model.weight.item() == state.best_epoch  # the kept epoch's weights are loaded
    return state


@pytest.mark.parametrize("curve, patience, epochs_run, kept", [
    ([0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2, 7, 7),  # a plateau of ties runs on to the end
    ([0.9, 1.0, 0.9, 1.0, 0.9, 0.9, 1.0], 2, 6, 4),  # two epochs below the kept one: stop
    ([0.9, 1.0, 0.8, 0.8, 0.8, 1.0], 0, 6, 6),  # patience 0: never stop
    ([0.5, 0.5, 0.5], 1, 3, 3),  # a tie is kept, not counted
])
def test_patience_counts_epochs_since_the_kept_epoch(curve, patience, epochs_run, kept):
    state = _run(curve, patience)
    assert (state.epoch, state.best_epoch) == (epochs_run, kept)
    assert state.stopped == (epochs_run < len(curve))


def test_common_epoch_counts_the_same_way():
    """k-fold selection on the pooled curve (``--fold-epoch common``) stops by the same rule."""
    lanes = [SimpleNamespace(stage=SimpleNamespace(model=torch.nn.Linear(1, 1)),
                             state=LoopState()) for _ in range(2)]
    selection = CommonEpoch(get_task("classification"), lanes, ACCELERATOR, patience=2)
    curve = iter([0.9, 1.0, 1.0, 0.9, 1.0, 0.8, 0.8, 1.0])
    selection.pooled_scores = lambda outputs: {"accuracy": next(curve), "loss": 1.0}
    ends = [EpochEnd(record={}, scores={"accuracy": 0.0}, outputs=np.zeros(1))] * 2
    stopped_at = next(e for e in range(1, 9) if selection.end_round(e, ends))
    assert (stopped_at, selection.best_epoch) == (7, 5)
