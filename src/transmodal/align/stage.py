"""Stage 1, "align": train only the embedder so embedded target data looks like the source.

Each step embeds a class-stratified chunk of the training data, passes it through the body's
own embedding module (what the first transformer block sees), mean-pools per sample and
takes the distance (OTDD, MMD or L2) to the cached source reference. Only the embedder's
parameters move. Regression and dense targets get pseudo-labels from k-means on the targets.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..config import FitConfig
from .distances import MMDSource, OTDDSource, l2
from .reference import source_reference

ALIGN_CHUNK = 256  # target points per step: 1 step per epoch on small sets


def pseudo_labels(task: str, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Class ids for classification; k-means clusters of the targets otherwise."""
    if task == "classification":
        return y.astype(np.int64)
    from sklearn.cluster import KMeans

    flat = y.reshape(len(y), -1).astype(np.float64)
    k = max(1, min(k, len(flat) // 2))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(flat).astype(np.int64)


def target_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean-pooled first-block inputs of the target data: (B, D)."""
    tokens = model.embedder(x)  # (B, S, D)
    return model.body.embed_tokens(tokens, model.embedder.grid).mean(1)


class Aligner:
    """Holds the source reference and the distance; ``distance(xt, yt)`` is differentiable."""

    def __init__(self, method: str, xs: torch.Tensor, ys: torch.Tensor, reg: float) -> None:
        self.method = method
        self.xs, self.ys = xs, ys
        # "entropic": the debiased Sinkhorn divergence, whose envelope gradient is exact (the
        # plain transport cost's gradient would be off by ~15% at reg 0.05; see distances.otdd)
        # source-only work (class statistics, self-terms, MMD bandwidths) is done once here
        self.source = (OTDDSource(xs, ys, reg=reg, objective="entropic") if method == "otdd" else
                       MMDSource(xs) if method == "mmd" else None)

    def distance(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        if self.method == "otdd":
            return self.source.distance(xt, yt)
        if self.method == "mmd":
            return self.source.distance(xt)
        return l2(self.xs, xt)


def _chunks(y: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index chunks of about ``size``, each holding every class in proportion."""
    n_chunks = max(1, int(np.ceil(len(y) / size)))
    parts: list[list[int]] = [[] for _ in range(n_chunks)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, piece in enumerate(np.array_split(idx, n_chunks)):
            parts[j].extend(piece.tolist())
    return [np.asarray(p) for p in parts if p]


def align(model: nn.Module, x: np.ndarray, labels: np.ndarray, cfg: FitConfig, body_path: str,
          device: torch.device, log: Callable[[dict[str, Any]], None] = lambda rec: None,
          progress: bool = True, checkpointer=None, resume: dict[str, Any] | None = None,
          ) -> dict[str, Any]:
    """Run ``cfg.align_epochs`` epochs of embedder alignment; returns the stage's record.

    The record holds the per-epoch distances and the target/source features before and after
    (for the report's 2-D projection).
    """
    from tqdm.auto import tqdm

    xs, ys = source_reference(model.body, body_path, seed=cfg.seed)
    xs, ys = xs.to(device), ys.to(device)
    aligner = Aligner(cfg.align, xs, ys, cfg.align_reg)
    xt_all = torch.from_numpy(x).to(device)
    yt_all = torch.from_numpy(labels).to(device)
    params = list(model.embedder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.head_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    body_flags = [(p, p.requires_grad) for p in model.body.parameters()]
    for p, _ in body_flags:  # no gradient work for the body in this stage
        p.requires_grad_(False)

    state: dict[str, Any] = {"history": [], "step": 0}
    start = 0
    if resume is not None and resume.get("stage") == "align":
        from ..checkpoint import restore

        restore(resume, model=model, optimizer=optimizer, generators={"chunks": gen})
        state, start = resume["state"], resume["epoch"]

    with torch.no_grad():  # "before" is only meaningful for a stage started from scratch
        before = target_features(model, xt_all).cpu() if start == 0 else None
    bar = tqdm(range(start, cfg.align_epochs), desc=f"align ({cfg.align})", disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        values, skipped = [], 0
        for idx in _chunks(labels, ALIGN_CHUNK, rng):
            feats = target_features(model, xt_all[idx])  # (b, D)
            dist = aligner.distance(feats, yt_all[idx])
            optimizer.zero_grad(set_to_none=True)
            bad = None if torch.isfinite(dist) else "distance"
            if bad is None:
                dist.backward()
                grads = [p.grad for p in params if p.grad is not None]
                if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
                    bad = "gradient"
            if bad is not None:
                if cfg.on_nan == "skip":  # drop this step, as the refine stage does
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                from ..train import NonFiniteError

                raise NonFiniteError(f"non-finite alignment {bad} in stage align, epoch "
                                     f"{epoch + 1}, step {state['step'] + 1}; try --align mmd "
                                     f"or l2, or pass --on-nan skip")
            optimizer.step()
            state["step"] += 1
            values.append(float(dist.detach()))
        rec = {"stage": "align", "epoch": epoch + 1, "step": state["step"], "method": cfg.align,
               "distance": float(np.mean(values)) if values else float("nan"),
               "skipped_steps": skipped, "seconds": time.perf_counter() - t0}
        state["history"].append(rec)
        log(rec)
        bar.set_postfix(distance=f"{rec['distance']:.4g}")
        last = epoch + 1 == cfg.align_epochs
        if checkpointer is not None and checkpointer.due(epoch + 1, last):
            checkpointer.save(stage="align", epoch=epoch + 1, step=state["step"], model=model,
                              optimizer=optimizer, scheduler=None, generators={"chunks": gen},
                              state=state, done=last)
    bar.close()
    for p, flag in body_flags:
        p.requires_grad_(flag)
    with torch.no_grad():
        after = target_features(model, xt_all).cpu()
    return {"history": state["history"], "before": before, "after": after,
            "source": xs.cpu(), "source_labels": ys.cpu(), "target_labels": labels}
