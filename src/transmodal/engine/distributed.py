"""Several processes (``torchrun`` / ``accelerate launch``): what changes, and what is refused.

The launcher starts N copies of ``transmodal fit``; accelerate joins them in one process group
(gloo on CPU, NCCL on GPUs) and wraps the model in DDP. Then:

- training batches are sharded: the prepared DataLoader draws one seeded permutation (the
  shuffling generator is synchronised from rank 0 every epoch) and gives rank r every N-th
  batch of ``--batch-size``, so one optimizer step sees ``batch_size x N`` samples (the global
  batch) and DDP averages the gradients;
- validation and test predictions are sharded the same way and gathered in order
  (``gather_for_metrics`` drops the padding of the last batch), so every rank scores the
  whole split and takes the same best-epoch and early-stopping decisions;
- the align stage is replicated: every rank draws the same chunks and takes the same steps;
- only the main process writes (run folder, checkpoints, plots, logs, trackers).

Refused with one message: a launch whose environment says WORLD_SIZE > 1 while this process
has no process group (each rank would train alone and write the same files), and a resume
with another process count than the run's (the shards and the global batch would change).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError


def check_process_group(accelerator: Any) -> None:
    """WORLD_SIZE > 1 but one process: the launch silently has no process group."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world > 1 and accelerator.num_processes == 1:
        raise ConfigError(
            f"WORLD_SIZE={world} but this process joined no process group (accelerate found "
            f"{accelerator.distributed_type}), so each rank would train alone and write the same "
            "run folder; on CPU launch with `torchrun --nproc-per-node N -m transmodal.cli fit ...` "
            "or `accelerate launch --multi_gpu --num_processes N -m transmodal.cli fit ...` "
            "(no --cpu: with --cpu accelerate starts one process), or unset WORLD_SIZE")


def check_resume_processes(ckpt: dict[str, Any] | None, accelerator: Any, where: str) -> None:
    """A resume continues with the run's process count (its shards and global batch)."""
    if ckpt is None:
        return
    before = int(ckpt.get("processes", 1))
    if before != accelerator.num_processes:
        raise CheckpointError(
            f"--resume {where}: the run was trained with {before} process(es) and this launch "
            f"has {accelerator.num_processes}; resume with {before} (the data shards and the "
            "global batch depend on it), or start a new run")


@torch.no_grad()
def predict_sharded(model: torch.nn.Module, x: np.ndarray, batch_size: int, accelerator: Any
                    ) -> np.ndarray:
    """Raw outputs for all of ``x``: each rank predicts its shard, then all gather in order."""
    from torch.utils.data import DataLoader

    from .loop import dataset_of

    inner = accelerator.unwrap_model(model)  # no DDP forward (and no buffer sync) in evaluation
    inner.eval()
    loader = accelerator.prepare_data_loader(
        DataLoader(dataset_of(x), batch_size=max(1, batch_size), shuffle=False))
    outs = []
    for (xb,) in loader:
        with accelerator.autocast():
            out = inner(xb).float()
        outs.append(accelerator.gather_for_metrics(out).cpu())
    accelerator._dataloaders.remove(loader)  # one loader per call: do not keep them all
    return torch.cat(outs).numpy()[: len(x)]


def global_mean_loss(accelerator: Any, total: float, count: int) -> tuple[float, int]:
    """The epoch's training loss over every rank's samples (the log shows the global mean)."""
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum")
    return float(t[0]), int(t[1])
