"""The refine stage: supervised fine-tuning with the best epoch chosen on validation data.

AdamW (body and embedder/head learning rates apart), linear warm-up then cosine decay or a
constant rate (``--schedule``), gradient clipping, early stopping. Devices and mixed precision
go through accelerate.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .config import FitConfig
from .errors import ResourceError, TransmodalError, is_oom
from .metrics import PRIMARY, compare_val, score


class NonFiniteError(TransmodalError):
    """Loss or gradient became NaN/inf."""


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
    return norm


def make_accelerator(device: str, precision: str):
    """Accelerator for the requested device; ``auto`` precision is fp32 on CPU (measured:
    bf16 autocast on our 2-core CPU was not faster for MiniLM at 64 tokens, see README)
    and bf16 on CUDA when the GPU supports it."""
    from accelerate import Accelerator

    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise TransmodalError(f"unknown --device {device!r}; use auto, cpu or cuda[:N]")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TransmodalError("--device cuda but no CUDA GPU is visible; use --device cpu")
    if precision == "auto":
        precision = "bf16" if (not use_cpu and torch.cuda.is_bf16_supported()) else "fp32"
    mixed = "bf16" if precision == "bf16" else "no"
    return Accelerator(cpu=use_cpu, mixed_precision=mixed), precision


def loss_fn(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(out.float(), y)
    return F.mse_loss(out.float(), y)


@torch.no_grad()
def predict_outputs(model: nn.Module, x: np.ndarray, batch_size: int, accelerator) -> np.ndarray:
    """Raw model outputs (logits / standardised values) for preprocessed x, in batches."""
    model.eval()
    outs = []
    for i in range(0, len(x), max(1, batch_size)):
        xb = torch.from_numpy(x[i: i + batch_size]).to(accelerator.device)
        with accelerator.autocast():
            outs.append(model(xb).float().cpu())
    return torch.cat(outs).numpy()


@dataclass
class TrainState:
    """Everything the loop carries from epoch to epoch (what a resume must restore)."""

    epoch: int = 0  # epochs completed
    step: int = 0
    best_epoch: int = -1
    best_val: dict[str, float] | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_batches: int = 0  # batches dropped by --on-nan skip
    stopped: bool = False  # early stopping ended the stage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        return cls(**d)


def lr_factor(total_steps: int, warmup_fraction: float, schedule: str = "cosine"
              ) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then cosine decay to 0 or constant."""
    warm = max(1, int(round(warmup_fraction * total_steps))) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Two groups: the pretrained body at ``lr``, the new embedder and head at ``head_lr``.
    LoRA adapters are new weights too (B starts at zero), so they train at ``head_lr``: at the
    body's 1e-4 they barely leave zero in a short small-data run (LoRA learning rates are
    usually ~10x those of full fine-tuning)."""
    body = [p for n, p in model.body.named_parameters() if p.requires_grad and ".lora_" not in f".{n}"]
    body_ids = {id(p) for p in body}
    new = [p for p in model.parameters() if p.requires_grad and id(p) not in body_ids]
    groups = [g for g in ({"params": body, "lr": cfg.lr}, {"params": new, "lr": cfg.head_lr}) if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def refine(
    model: nn.Module,
    task: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    accelerator,
    decode: Callable[[np.ndarray], np.ndarray],
    val_true: np.ndarray,
    log: Callable[[dict[str, Any]], None] = lambda rec: None,
    progress: bool = True,
    checkpointer=None,
    resume: dict[str, Any] | None = None,
) -> TrainState:
    """Train, evaluate on validation each epoch, keep the best weights (loaded at the end).

    ``decode`` maps raw outputs to label space so validation scores are in user units;
    ``val_true`` are the validation labels in that space. ``checkpointer``
    (:class:`transmodal.checkpoint.Checkpointer`) saves a resumable checkpoint every
    ``cfg.checkpoint_every`` epochs; ``resume`` (a loaded ``"refine"`` checkpoint) continues
    from it exactly: same batches, dropout masks and optimizer state as without the break.
    A non-finite loss or gradient stops with :class:`NonFiniteError` (``on_nan="stop"``) or
    drops that batch (``"skip"``: no optimizer or scheduler step; counted per epoch).
    """
    from tqdm.auto import tqdm

    x_tr, y_tr = train
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                        batch_size=cfg.batch_size, shuffle=True, generator=gen)
    optimizer = build_optimizer(model, cfg)
    steps = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(steps, cfg.warmup, cfg.schedule))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    params = [p for p in model.parameters() if p.requires_grad]

    state = TrainState()
    if resume is not None:  # last: restore() also puts back the RNG states
        from .checkpoint import restore

        restore(resume, model=accelerator.unwrap_model(model), optimizer=optimizer,
                scheduler=scheduler, scaler=accelerator.scaler, generators={"loader": gen})
        state = TrainState.from_dict(resume["state"])
    best_weights = (resume or {}).get("best_model") or copy.deepcopy(model.state_dict())
    metric_name, _ = PRIMARY[task]
    start = cfg.epochs if state.stopped else state.epoch
    bar = tqdm(range(start, cfg.epochs), desc="refine", disable=not progress, leave=False,
               initial=start, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total, count, skipped = 0.0, 0, 0
        for xb, yb in loader:
            with accelerator.autocast():
                out = model(xb)
            loss = loss_fn(task, out, yb)
            optimizer.zero_grad(set_to_none=True)
            bad = None if torch.isfinite(loss) else "loss"
            if bad is None:
                accelerator.backward(loss)
                norm = grad_norm(accelerator, params, cfg.grad_clip)
                bad = None if norm is None or torch.isfinite(norm) else "gradient"
            if bad is not None:
                if cfg.on_nan == "skip":  # drop the batch: no optimizer or scheduler step
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                where = checkpointer.describe_last() if checkpointer is not None else "nothing was saved"
                raise NonFiniteError(
                    f"non-finite {bad} in stage refine, epoch {epoch + 1}, step {state.step + 1}; "
                    f"lower --lr or check the data scale, or pass --on-nan skip; {where}"
                )
            optimizer.step()
            scheduler.step()
            state.step += 1
            total += loss.item() * len(xb)
            count += len(xb)
        state.skipped_batches += skipped
        x_va, y_va = val
        raw = predict_outputs(model, x_va, cfg.batch_size * 2, accelerator)
        val_loss = float(loss_fn(task, torch.from_numpy(raw), torch.from_numpy(y_va)))
        val_scores = {**score(task, val_true, decode(raw)), "loss": val_loss}
        state.epoch = epoch + 1
        verdict = compare_val(task, val_scores, state.best_val)
        if verdict >= 0:  # a tie goes to the later epoch (metrics.compare_val says why)
            state.best_val, state.best_epoch = val_scores, state.epoch
            best_weights = copy.deepcopy(model.state_dict())
        state.bad_epochs = 0 if verdict > 0 else state.bad_epochs + 1
        rec = {"stage": "refine", "epoch": state.epoch, "step": state.step,
               "train_loss": total / max(count, 1), "val_loss": val_loss,
               **{f"val_{k}": v for k, v in val_scores.items() if k != "loss"},
               "lr": scheduler.get_last_lr()[0], "skipped_batches": skipped,
               "seconds": time.perf_counter() - t0}
        state.history.append(rec)
        log(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", **{metric_name: f"{val_scores[metric_name]:.3f}"})
        state.stopped = bool(cfg.patience and state.bad_epochs >= cfg.patience)
        last = state.stopped or state.epoch == cfg.epochs
        if checkpointer is not None and checkpointer.due(state.epoch, last):  # after log(rec)
            checkpointer.save(stage="refine", epoch=state.epoch, step=state.step, model=model,
                              optimizer=optimizer, scheduler=scheduler, scaler=accelerator.scaler,
                              generators={"loader": gen}, state=state.to_dict(), done=last,
                              best_model=None if state.best_epoch == state.epoch else best_weights)
        if state.stopped:
            break
    bar.close()
    accelerator.unwrap_model(model).load_state_dict(best_weights)
    return state
