"""The training engine: one loop for every stage, its callbacks, and the optimizer set-up."""

from .loop import EpochEnd, LoopState, NonFiniteError, Stage, predict_outputs, run_stage, start_state

__all__ = ["Stage", "EpochEnd", "LoopState", "NonFiniteError", "run_stage", "start_state",
           "predict_outputs"]
