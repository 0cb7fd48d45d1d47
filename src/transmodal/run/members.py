"""Members: the models one run trains (``--folds``, ``--ensemble``), and how they split the data.

One model with a holdout is the default. With ``--folds K`` the training data are cut into K
stratified folds and K models are trained, each validated (best epoch, early stopping) on its
own fold: every training sample is validated on once, so the run's validation score is an
out-of-fold score over all of them instead of a 7-sample holdout's coin toss. ``--ensemble N``
repeats the plan with seeds ``seed .. seed+N-1`` (with folds: the same folds, new seeds, so the
out-of-fold outputs line up). All members' probabilities (or values) are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import split_train_val
from ..errors import DataError


@dataclass(frozen=True)
class Member:
    """One model to train: its seed and its (training, validation) indices into the data."""

    index: int
    seed: int
    train: np.ndarray
    val: np.ndarray
    fold: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "seed": self.seed, "fold": self.fold,
                "n_train": int(len(self.train)), "n_val": int(len(self.val))}


def plan_members(y: np.ndarray, task: Any, cfg: Any) -> list[Member]:
    """The members of a run, in training order."""
    seeds = [cfg.seed + i for i in range(cfg.ensemble)]
    if not cfg.folds:  # a holdout per member, drawn with the member's own seed
        return [Member(i, s, *split_train_val(y, task, cfg.val_fraction, s))
                for i, s in enumerate(seeds)]
    folds = fold_splits(y, task, cfg.folds, cfg.seed)
    return [Member(i * len(folds) + k, s, tr, va, k)
            for i, s in enumerate(seeds) for k, (tr, va) in enumerate(folds)]


def fold_splits(y: np.ndarray, task: Any, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, validation) index pairs, shuffled with ``seed``, stratified by class where the
    task has classes; every sample is in exactly one validation fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(y) < k:
        raise DataError(f"--folds {k} needs at least {k} training samples, got {len(y)}; "
                        "use fewer folds")
    strat = task.stratify(y)
    idx = np.arange(len(y))
    if strat is None:
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(idx)
    else:
        classes, counts = np.unique(strat, return_counts=True)
        c, smallest = classes[counts.argmin()].tolist(), int(counts.min())  # plain values in messages
        if smallest < 2:
            raise DataError(f"--folds {k}: class {c!r} has a single training sample; k-fold "
                            "selection needs at least 2 per class (use --folds 0)")
        if smallest < k:
            raise DataError(f"--folds {k}: class {c!r} has only {smallest} training samples, so "
                            f"some folds could not validate it; use --folds {smallest} or fewer")
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, strat)
    return [(np.sort(tr), np.sort(va)) for tr, va in splits]


def out_of_fold_outputs(task: Any, members: list[Member], outputs: list[np.ndarray],
                        n: int) -> np.ndarray:
    """Each sample's validation outputs from the fold members that held it out, mixed like
    the run's prediction (seeds of an ensemble averaged): (n, ...) raw outputs."""
    by_seed: dict[int, list[tuple[Member, np.ndarray]]] = {}
    for m, out in zip(members, outputs):
        by_seed.setdefault(m.seed, []).append((m, out))
    per_seed = []
    for pairs in by_seed.values():
        full = np.zeros((n, *pairs[0][1].shape[1:]), dtype=np.float32)
        for m, out in pairs:
            full[m.val] = out
        per_seed.append(full)
    return task.mix(per_seed, [1.0 / len(per_seed)] * len(per_seed))


def nested_out_of_fold(task: Any, members: list[Member], curves: list[list[np.ndarray]],
                       y_true: np.ndarray, y_enc: np.ndarray, weight: np.ndarray | None = None
                       ) -> tuple[np.ndarray, list[int]]:
    """Out-of-fold outputs whose epochs were chosen without the fold they score.

    A fold model keeps the epoch that scored best on its own validation fold, so its outputs
    at that epoch have already been selected on: on 7-sample folds the transformer's
    out-of-fold accuracy ran +5 points above its test accuracy (ArrowHead +11 to +23; README).
    This is the other side: fold k scored at the epoch that the *other* folds of its seed
    choose (on 3 of 4 measured runs 8-17 points *below* the fold models' test accuracy: a small
    fold model's curve swings from epoch to epoch, and another fold's good epoch is often a poor
    one for it), so the two bracket it; ``summary.json`` reports both. Fold k's epoch: the others, pooled, choose
    (the same rule as the best-epoch choice, ``Task.compare``: ties go to the later epoch), over
    the epochs every fold of the seed ran. ``curves[i]``: member i's validation raw outputs
    per epoch (``ValidationOutputs``); ``y_true``/``y_enc``: all training targets (user's /
    encoded); ``weight``: all training samples' weights, or None. Returns the mixed out-of-fold outputs (n, ...) and each member's epoch (1-based).
    """
    import torch

    epochs: list[int] = []
    parts: list[np.ndarray] = []
    for i, m in enumerate(members):
        others = [j for j, o in enumerate(members) if o.seed == m.seed and j != i]
        if not others:  # a single fold: nothing else to choose with
            best = len(curves[i])
        else:
            span = min(len(curves[j]) for j in [i, *others])
            idx = np.concatenate([members[j].val for j in others])
            w = () if weight is None else (weight[idx] / weight[idx].mean(),)
            best, best_scores = 1, None
            for e in range(span):
                raw = np.concatenate([curves[j][e] for j in others])
                loss = task.loss(torch.from_numpy(raw), torch.from_numpy(y_enc[idx]),
                                 *(torch.from_numpy(v) for v in w))
                scores = {**task.score_outputs(y_true[idx], raw, *w), "loss": float(loss)}
                if task.compare(scores, best_scores) >= 0:
                    best, best_scores = e + 1, scores
        epochs.append(best)
        parts.append(curves[i][best - 1])
    return out_of_fold_outputs(task, members, parts, len(y_enc)), epochs
