"""Pruning: a callback in the one training loop that reports each refine epoch's validation
score (the task's primary metric) to the Optuna trial and stops a trial the pruner gives up on."""

from __future__ import annotations

from typing import Any

from ..engine.callbacks import Callback
from ..engine.loop import EpochEnd, LoopState, Stage


class PruneOnValidation(Callback):
    """Report ``end.scores[metric]`` at step = refine epoch; raise ``optuna.TrialPruned`` when
    the pruner says so. The align stage has no validation score and reports nothing."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def on_epoch_end(self, stage: Stage, state: LoopState, end: EpochEnd) -> None:
        if end.scores is None:
            return
        import optuna

        self.trial.report(float(end.scores[self.metric]), state.epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", state.epoch)
            raise optuna.TrialPruned(f"pruned after refine epoch {state.epoch}")
