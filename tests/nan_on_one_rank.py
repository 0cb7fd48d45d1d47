"""A torchrun target for tests/test_distributed.py (not a test module): ``transmodal fit`` whose
refine loss becomes NaN on rank 1 only, at its training batch number $NAN_AT (from 1); every
rank saves the model it trained to $WEIGHTS_OUT/rank{R}.pt (the run folder holds rank 0's) and
the exit code it chose to $WEIGHTS_OUT/exit{R}.txt (torchrun's summary may show a rank stopped
by its SIGTERM instead, when the other rank exited first)."""

import importlib
import os
import sys

import torch

from transmodal.cli import main
from transmodal.engine.refine import RefineStage

trainer = importlib.import_module("transmodal.run.trainer")

RANK, AT, OUT = int(os.environ["RANK"]), int(os.environ["NAN_AT"]), os.environ["WEIGHTS_OUT"]
real_loss, real_train = RefineStage.batch_loss, trainer.MemberTrainer.train
calls = 0


def batch_loss(self, batch):
    global calls
    loss, n = real_loss(self, batch)
    calls += 1
    return (loss * float("nan") if RANK == 1 and calls == AT else loss), n


def train(self, *args, **kw):
    out = real_train(self, *args, **kw)  # (plain trained model, ...) on every rank
    torch.save(out[0].state_dict(), os.path.join(OUT, f"rank{RANK}.pt"))
    return out


RefineStage.batch_loss, trainer.MemberTrainer.train = batch_loss, train
code = main()
with open(os.path.join(OUT, f"exit{RANK}.txt"), "w") as f:
    f.write(str(code))
sys.exit(code)
