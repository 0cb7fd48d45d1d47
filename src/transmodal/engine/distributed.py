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
- the head's BatchNorm (``--head-norm batch``: FeatureNorm, TokenNorm) standardises with the
  global batch's statistics (one autograd all-reduce per training forward pass,
  ``models/heads/pooled.py``), so N processes x B samples train like one process x N*B;
- the ranks agree every step on whether a loss is non-finite (:func:`agree_nonfinite`), so
  all skip that batch (``--on-nan skip``) or all stop with the same message;
- the align stage is replicated: every rank draws the same chunks and takes the same steps;
- only the main process writes (run folder, checkpoints, plots, logs, trackers).

``--distributed fsdp`` (FSDP2, ``torch.distributed.fsdp.fully_shard``, applied here rather
than by accelerate: accelerate 1.15 turns its FSDP plugin on for GPUs only, on CPU it silently
runs DDP, and its FSDP2 wants the one optimizer prepared with the model while each of our
stages has its own). The align stage and the probe warm start run on the whole model (every
rank the same, as under DDP); then each body block and the rest of the model (embedder, head)
are sharded for the refine stage, so its weights, gradients and AdamW moments are split over
the processes. Every collective runs on every rank: the checkpoint's full model, optimizer and
best weights are gathered by all and written by the main process; a resume loads the full
state on every rank and shards it again; the best weights stay sharded in memory. When the
stage ends every rank gathers the trained model into a plain copy (the same run folder as a
DDP run; test scores and the saved model come from it).

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

FSDP_ENV = "ACCELERATE_USE_FSDP"  # set by `accelerate launch --use_fsdp`


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


# ----------------------------------------------------------------------------- FSDP


def check_sharding(distributed: str, accelerator: Any, model: torch.nn.Module) -> None:
    """Refuse accelerate's own FSDP switch (ignored on CPU: the run would silently be DDP),
    ``--distributed fsdp`` in one process (nothing to shard over) and models with a scalar
    parameter (FSDP2 shards dimension 0; e.g. a contrastive head's temperature)."""
    if os.environ.get(FSDP_ENV, "false").lower() in ("true", "1", "yes"):
        raise ConfigError(
            f"{FSDP_ENV}=true (`accelerate launch --use_fsdp`): transmodal shards the model "
            "itself; accelerate's FSDP plugin runs on GPUs only (on CPU it silently trains DDP) "
            "and prepares one optimizer, each of our stages has its own. Launch without "
            "--use_fsdp and pass --distributed fsdp")
    if distributed != "fsdp":
        return
    if accelerator.num_processes < 2:
        raise ConfigError(
            "--distributed fsdp shards the model over several processes but this launch has "
            "one; start it with `torchrun --nproc-per-node N -m transmodal.cli fit ...` (N >= 2), "
            "or drop --distributed fsdp")
    scalars = [n for n, p in model.named_parameters() if p.dim() == 0]
    if scalars:
        raise ConfigError(
            f"--distributed fsdp: this model has scalar parameters ({', '.join(scalars[:3])}), "
            "which FSDP2 cannot shard (e.g. --objective contrastive's temperature); use "
            "--distributed ddp")


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``model`` (its parameters are DTensor shards)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def meta_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s structure whose parameters live on the meta device (no memory);
    buffers are copied (non-persistent ones, e.g. position ids, are in no state dict). Taken
    before sharding, it becomes the plain trained model in :func:`gather_model`."""
    from ..models.model import copy_with

    return copy_with(model, lambda p: torch.empty_like(p, device="meta"), buffers=False)


def shard_model(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """FSDP2 in place: one unit per body block (``Body.blocks``), the root unit holds the
    rest (embedder, head). Every rank starts from rank 0's weights and buffers, as DDP does."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model.to(accelerator.device)
    _broadcast([p.data for p in model.parameters()])
    sync_buffers(model)
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    for block in model.body.blocks():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (e.g. a body's BatchNorm running statistics, updated by each rank on its
    own batches; the head's norms update from the global batch, equal everywhere) on every
    rank: all ranks evaluate, and the run saves, the same model (DDP broadcasts them before
    each forward pass)."""
    _broadcast(list(model.buffers()))


def _broadcast(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values in place; expanded constants (e.g. position ids, not contiguous) are
    the same everywhere and cannot be written in place: skipped."""
    import torch.distributed as dist

    with torch.no_grad():
        for t in tensors:
            if t.is_contiguous():
                dist.broadcast(t, src=0)


def gather_model(model: torch.nn.Module, twin: torch.nn.Module, device: Any) -> torch.nn.Module:
    """Collective: the sharded ``model``'s full weights in ``twin`` (from :func:`meta_twin`),
    a plain module on ``device`` on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    twin.load_state_dict(full, assign=True)
    return twin.to(device)


def full_weights(weights: dict[str, Any], main: bool) -> dict[str, torch.Tensor]:
    """Collective: full CPU tensors of a state dict of shards (the best weights) on the main
    process; the other ranks take part and get an empty dict."""
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in weights.items():
        full = v.full_tensor() if isinstance(v, DTensor) else v
        if main:
            out[k] = full.detach().cpu()
    return out


def local_weights(full: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """The shards of full weights (a checkpoint's best weights) that this rank keeps, laid out
    like ``model.state_dict()`` (each rank holds the full tensors: no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    out = {}
    for k, v in model.state_dict().items():
        t = full[k].to(v.device)
        out[k] = (distribute_tensor(t, v.device_mesh, v.placements, src_data_rank=None)
                  if isinstance(v, DTensor) else t)
    return out


def full_training_state(model: torch.nn.Module, optimizer: Any) -> tuple[dict, dict]:
    """Collective: (model, optimizer) full state dicts on CPU for the main process to write
    (empty on the other ranks). The optimizer's is keyed by parameter names (torch DCP)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return (get_model_state_dict(model, options=opts),
            get_optimizer_state_dict(model, inner, options=opts))


def load_training_state(model: torch.nn.Module, optimizer: Any, ckpt: dict[str, Any]) -> None:
    """A checkpoint's full model and optimizer state into the sharded ``model`` (every rank read
    the file, so each takes its own shards)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, ckpt["model"], options=opts)
    if optimizer is not None:
        set_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer),
                                 ckpt["optimizer"], options=opts)


def agree_nonfinite(bad: bool, device: Any, what: str, processes: int) -> str | None:
    """Collective, every training step: None when every rank's loss is finite, else what to
    report (the same on every rank). Why: a rank that skips backward (``--on-nan skip``) or
    stops while the others call DDP's gradient all-reduce (or FSDP's reduce-scatter) leaves
    them waiting forever; the gradient norm needs no agreement (it is computed from the
    all-reduced gradients, the same on every rank)."""
    import torch.distributed as dist

    flag = torch.tensor([float(bad)], device=device)  # (1,)
    dist.all_reduce(flag)  # how many ranks have a non-finite loss
    count = int(flag.item())
    return None if count == 0 else f"{what} (on {count} of {processes} processes)"


def agree(flag: bool) -> bool:
    """The main process's ``flag`` on every rank (e.g. whether a checkpoint is due: its timing
    is measured by the main process alone)."""
    import torch.distributed as dist

    box = [bool(flag)]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
