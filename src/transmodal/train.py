"""The refine stage: supervised fine-tuning with the best epoch chosen on validation data.

AdamW (body and embedder/head learning rates apart), linear warm-up then cosine decay,
gradient clipping, early stopping. Devices and mixed precision go through accelerate.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .config import FitConfig
from .errors import TransmodalError
from .metrics import PRIMARY, is_better, score


class NonFiniteError(TransmodalError):
    """Loss or gradient became NaN/inf."""


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


def cosine_with_warmup(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warm = max(1, int(round(warmup_fraction * total_steps))) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Two groups: the pretrained body at ``lr``, the new embedder and head at ``head_lr``."""
    body = [p for p in model.body.parameters() if p.requires_grad]
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
) -> TrainState:
    """Train, evaluate on validation each epoch, keep the best weights (loaded at the end).

    ``decode`` maps raw outputs to label space so validation scores are in user units;
    ``val_true`` are the validation labels in that space.
    """
    from tqdm.auto import tqdm

    x_tr, y_tr = train
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                        batch_size=cfg.batch_size, shuffle=True, generator=gen)
    optimizer = build_optimizer(model, cfg)
    steps = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(steps, cfg.warmup))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    params = [p for p in model.parameters() if p.requires_grad]

    state = TrainState()
    best_weights = copy.deepcopy(model.state_dict())
    metric_name, _ = PRIMARY[task]
    bar = tqdm(range(cfg.epochs), desc="refine", disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            with accelerator.autocast():
                out = model(xb)
            loss = loss_fn(task, out, yb)
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"non-finite loss in stage refine, epoch {epoch + 1}, step {state.step + 1}; "
                    "lower --lr or check the data scale"
                )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state.step += 1
            total += loss.item() * len(xb)
            count += len(xb)
        x_va, y_va = val
        raw = predict_outputs(model, x_va, cfg.batch_size * 2, accelerator)
        val_loss = float(loss_fn(task, torch.from_numpy(raw), torch.from_numpy(y_va)))
        val_scores = {**score(task, val_true, decode(raw)), "loss": val_loss}
        state.epoch = epoch + 1
        improved = is_better(task, val_scores, state.best_val)
        if improved:
            state.best_val, state.best_epoch, state.bad_epochs = val_scores, state.epoch, 0
            best_weights = copy.deepcopy(model.state_dict())
        else:
            state.bad_epochs += 1
        rec = {"stage": "refine", "epoch": state.epoch, "step": state.step,
               "train_loss": total / max(count, 1), "val_loss": val_loss,
               **{f"val_{k}": v for k, v in val_scores.items() if k != "loss"},
               "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        state.history.append(rec)
        log(rec)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", **{metric_name: f"{val_scores[metric_name]:.3f}"})
        if cfg.patience and state.bad_epochs >= cfg.patience:
            break
    bar.close()
    accelerator.unwrap_model(model).load_state_dict(best_weights)
    return state
