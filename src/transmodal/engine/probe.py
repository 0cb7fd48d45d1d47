"""Linear-probe warm start of the head (LP-FT: Kumar et al., 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution").

Why: a randomly initialised head makes the first fine-tuning steps push random gradients into
the pretrained body. Measured on the development sets (session 5 note): a logistic regression on
the mean-pooled features of a *random* embedder + the frozen MiniLM body beats the default
fine-tuned model on ArrowHead (0.754 vs 0.491 test) and OSULeaf. So the refine stage first fits
the head in closed form on those features (the task chooses the model: logistic regression for
classes, ridge for values, each with its regularisation chosen by inner cross-validation on the
training split only), then fine-tunes everything from there.

The features are standardised for the fit (pooled transformer features share one large mean
direction and vary little around it); the head keeps the statistics in its FeatureNorm
(``--head-norm batch``) or folds them into its linear layer (``none``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

PROBE_EPS = 1e-5  # added to each feature's variance (torch's BatchNorm default)


@torch.no_grad()
def head_features(model: nn.Module, x: Any, batch_size: int, device: Any,
                  autocast: Any) -> np.ndarray:
    """(N, F) float64: what the head's linear layer sees, for the (preprocessed) inputs ``x``."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), max(1, batch_size)):
        xb = torch.from_numpy(np.asarray(x[i: i + batch_size])).to(device)
        with autocast():
            hidden, grid = model.features(xb)  # (B, S, D)
            out.append(model.head.probe_features(hidden, grid).double().cpu())  # (B, F)
    model.train(was_training)
    return torch.cat(out).numpy()


def warm_start_head(model: nn.Module, task: Any, x: Any, y: np.ndarray,
                    weight: np.ndarray | None, batch_size: int, device: Any,
                    autocast: Any) -> str:
    """Fit the head of ``model`` (unwrapped) on frozen features; returns what was done, for the
    run summary. Heads without a linear read-out (dense, contrastive, generate) and tasks
    without a probe keep their random initialisation, and the returned text says so."""
    head = model.head
    if not hasattr(head, "probe_features"):
        return f"random (the {type(head).__name__} has no linear probe)"
    feats = head_features(model, x, batch_size, device, autocast)  # (N, F)
    mean = feats.mean(axis=0)
    std = np.sqrt(feats.var(axis=0) + PROBE_EPS)  # BatchNorm's eps: the FeatureNorm's own scale
    fitted = task.probe((feats - mean) / std, y, weight)
    if fitted is None:
        return "random (the task has no linear probe for these targets)"
    coef, intercept, detail = fitted  # (K, F), (K,) on standardised features
    head.warm_start(*(torch.from_numpy(np.asarray(a, dtype=np.float64))
                      for a in (coef, intercept, mean, std)))
    return f"probe ({detail})"
