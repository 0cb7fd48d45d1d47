"""What every training stage is set up with: the accelerator (device, precision), AdamW with
two learning rates, the learning-rate schedule, the gradient norm, and memory advice."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError, ResourceError, TransmodalError, is_oom


@contextmanager
def memory_advice(stage: str, batch_size: int, fix: str | None = None):
    """Turn an out-of-memory error into one ResourceError that names the fix (API and CLI)."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not is_oom(e):
            raise
        where = f"at batch size {batch_size}"
        if fix is None:  # the fit stages: the batch size is the user's option
            where = f"at --batch-size {batch_size}"
            fix = (f"try --batch-size {max(1, batch_size // 2)} (or a smaller --max-tokens)"
                   if batch_size > 1 else "try a smaller --max-tokens or a smaller --body")
        raise ResourceError(f"out of memory in stage {stage} {where}; {fix}") from e


def grad_norm(accelerator, params: list[nn.Parameter], clip: float) -> torch.Tensor | None:
    """Total gradient norm (clipping to ``clip`` when > 0): what the NaN/inf guard checks."""
    norm = accelerator.clip_grad_norm_(params, clip) if clip > 0 else None
    if norm is None:
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else None
    if norm is not None and hasattr(norm, "full_tensor"):  # sharded gradients (FSDP): a DTensor
        norm = norm.full_tensor()
    return norm


# bf16 autocast pays on a GPU only once a train step has enough matrix work to hide its cast
# kernels: measured on an H200 with MiniLM (width 384), fp32 -> bf16 step time 0.80x at 16 x 64
# and 16 x 128 tokens, 0.81x at 64 x 64, 1.08x at 64 x 128, 1.13x at 16 x 512, 3.94x at 64 x 512
# (README: GPU). The crossover, 8192 tokens per step at width 384, is scaled by width^2 (the
# matrix work per token) for other bodies: an assumption, not measured.
BF16_MIN_STEP_WORK = 8192 * 384 ** 2


def step_work(model: nn.Module, batch_size: int, max_tokens: int | None) -> float | None:
    """Matrix work of one train step in token-width^2 units (``max_tokens`` capped at the body's
    limit); None for pixel bodies (unmeasured) and models without a token body."""
    body = getattr(model, "body", None)
    if body is None or max_tokens is None or getattr(body, "takes_pixels", False):
        return None
    return float(batch_size) * min(max_tokens, body.max_tokens) * body.embed_dim ** 2


def auto_precision(use_cpu: bool, work: float | None = None) -> str:
    """``--precision auto``: fp32 on CPU (bf16 autocast on our 2-core CPU was not faster for
    MiniLM at 64 tokens, see README); on a GPU with bf16, bf16 unless the step is too small to
    gain from it (``BF16_MIN_STEP_WORK``; unknown work keeps bf16)."""
    if use_cpu or not torch.cuda.is_bf16_supported(including_emulation=False):  # no emulated bf16
        return "fp32"
    return "fp32" if work is not None and work < BF16_MIN_STEP_WORK else "bf16"


def _drop_other_state(use_cpu: bool, mixed: str) -> None:
    """accelerate keeps one device/precision state per process and refuses a second Accelerator
    that differs; fits in one process (a search, a benchmark, a grid search, predicting after
    training) may resolve another precision or device. In a single process, start a fresh state
    then (Accelerators built before keep their own autocast setting); with several processes the
    state holds the process group, so it stays and accelerate's own error is raised."""
    from accelerate.state import AcceleratorState

    if not AcceleratorState._shared_state:
        return
    state = AcceleratorState()
    if state.num_processes > 1:
        return
    other_gpu = (not use_cpu and state.device.index is not None
                 and state.device.index != torch.cuda.current_device())  # --device cuda:N
    if state.mixed_precision != mixed or (state.device.type == "cpu") != use_cpu or other_gpu:
        AcceleratorState._reset_state(reset_partial_state=True)


def check_device(device: str) -> None:
    """One clear line for a device that is not auto, cpu or a visible cuda[:N]."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise TransmodalError(f"unknown --device {device!r}; use auto, cpu or cuda[:N]")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TransmodalError("--device cuda but no CUDA GPU is visible; use --device cpu")


def make_accelerator(device: str, precision: str, work: float | None = None):
    """Accelerator for the requested device and the precision used (``auto`` resolved by
    :func:`auto_precision` from the step's matrix ``work``, see :func:`step_work`)."""
    from accelerate import Accelerator

    check_device(device)
    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device.startswith("cuda:") and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(torch.device(device))  # accelerate's single process uses the current GPU
    if precision == "auto":
        precision = auto_precision(use_cpu, work)
    mixed = "bf16" if precision == "bf16" else "no"
    _drop_other_state(use_cpu, mixed)
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed)
    from .distributed import check_process_group

    check_process_group(accelerator)  # WORLD_SIZE > 1 with no process group: refused
    return accelerator, precision


def learning_rates(cfg: Any, names: tuple[str, ...] = ("lr", "head_lr")) -> tuple[float, ...]:
    """The learning rates ``names`` of a resolved config (default: body, then embedder and
    head): ``fit`` fills unset ones from the task (``Task.with_defaults``); a stage called on
    its own needs them set."""
    if any(getattr(cfg, n) is None for n in names):
        raise ConfigError("the learning rates are not set: fit() takes them from the task "
                          "(Task.with_defaults(cfg)); a stage called directly needs "
                          + " and ".join(names))
    return tuple(float(getattr(cfg, n)) for n in names)


def lr_factor(total_steps: int, warmup_fraction: float, schedule: str = "cosine",
              min_warmup_steps: int = 0) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then cosine decay to 0 or constant.

    The warm-up lasts ``warmup_fraction`` of the steps, and at least ``min_warmup_steps`` of
    them (but never more than half)."""
    warm = max(1, int(round(warmup_fraction * total_steps))) if warmup_fraction > 0 else 0
    if warm:
        warm = max(warm, min(min_warmup_steps, total_steps // 2))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: nn.Module, lr: float, head_lr: float, weight_decay: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """Two groups: pretrained weights (the body; a contrastive head's text encoder) at ``lr``,
    the new embedder and head (projections, temperature) at ``head_lr``.
    LoRA adapters are new weights too (B starts at zero), so they train at ``head_lr``: at the
    body's 1e-4 they barely leave zero in a short small-data run (LoRA learning rates are
    usually ~10x those of full fine-tuning).

    ``fused`` (--fused-adamw): torch's fused kernel, one pass per tensor; on CPU the step
    took 16-18 ms instead of 77-108 ms for MiniLM (the default per-tensor loop; foreach was no
    faster), but its float results differ slightly from the default's, so it is opt-in
    (README "Training speed")."""
    from ..models.tuning import ADAPTER_MARK

    adapters = {id(p) for n, p in model.named_parameters() if ADAPTER_MARK in f".{n}"}
    body = [p for p in model.pretrained_parameters() if p.requires_grad and id(p) not in adapters]
    body_ids = {id(p) for p in body}
    new = [p for p in model.parameters() if p.requires_grad and id(p) not in body_ids]
    groups = [g for g in ({"params": body, "lr": lr}, {"params": new, "lr": head_lr}) if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=fused or None)
