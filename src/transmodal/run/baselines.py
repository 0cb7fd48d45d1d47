"""The cheap baselines ``fit`` scores beside the model (``--baselines``): did the body earn its cost?

``fast`` (the default): the linear (logistic / ridge) and 1-NN baselines of
``transmodal.bench.baselines``, well under a second on data of the bench suite's size (GunPoint:
0.1 s together). ``all`` adds MiniRocket + ridge where it applies (classification or regression
on series (N, C, L)), through the bench's numba guard (DESIGN.md: numba must stay off OpenMP
beside torch); it is skipped, with the reason, above ``MINIROCKET_MAX_VALUES`` input values.
Inputs on disk (a data folder, ``data/stream.py``) are read whole for the baselines up to
``STREAMED_MAX_VALUES``; above it every baseline is skipped with the reason.

The baselines are fitted on the whole training split (the model's training and validation
parts, as the bench suite does) and predict the test split only to score it. They run after
the model has been trained and scored, and never touch it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BASELINE_SETS = {"none": (), "fast": ("linear", "1nn"), "all": ("linear", "1nn", "minirocket")}
# MiniRocket transforms ~1e5 input values per 0.1-1 s here (bench suite: GunPoint 0.1 s,
# digits 1.0 s); 5e6 values would take most of a minute on 2 cores
MINIROCKET_MAX_VALUES = 5_000_000
# inputs on disk (data/stream.py) are read into memory for the baselines up to this many values
# (400 MB of float32; the linear and 1-NN baselines copy them once or twice more)
STREAMED_MAX_VALUES = 100_000_000


def score_baselines(which: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, task: str, seed: int) -> dict[str, dict[str, Any]]:
    """``{name: scores and times}``, or ``{name: {"skipped": why}}`` for one that does not apply."""
    from ..bench.baselines import TASKS, run_baselines

    names = BASELINE_SETS[which]
    if task not in TASKS:
        return {n: {"skipped": f"no baseline for task {task!r}"} for n in names}
    if not isinstance(x_train, np.ndarray) or not isinstance(x_test, np.ndarray):  # on disk
        values = x_train.size + x_test.size
        if values > STREAMED_MAX_VALUES:
            why = (f"the inputs stay on disk ({values:,} values, train + test) and the baselines "
                   f"hold theirs in memory; fit's limit is {STREAMED_MAX_VALUES:,}")
            return {n: {"skipped": why} for n in names}
        x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    skipped = {}
    if "minirocket" in names:
        reason = _minirocket_skip_reason(x_train, x_test)
        if reason:
            skipped["minirocket"] = {"skipped": reason}
    run = tuple(n for n in names if n not in skipped)
    rows = run_baselines(x_train, y_train, x_test, y_test, task, seed=seed, names=run) if run else []
    scored = {r["name"]: {k: v for k, v in r.items() if k not in ("name", "task")} for r in rows}
    return {n: scored.get(n) or skipped[n] for n in names}


def _minirocket_skip_reason(x_train: np.ndarray, x_test: np.ndarray) -> str | None:
    if x_train.ndim != 3:
        return "MiniRocket is a method for series (N, C, L); these inputs are images"
    values = x_train.size + x_test.size
    if values > MINIROCKET_MAX_VALUES:
        return (f"{values:,} input values (train + test) would take about a minute or more; "
                f"fit's limit is {MINIROCKET_MAX_VALUES:,}: run `transmodal bench suite --data "
                "DATA --methods full` for the full comparison")
    return None


def baseline_lines(summary: dict[str, Any]) -> list[str]:
    """The baselines' test scores beside the model's, for the CLI summary."""
    from ..bench.suite_methods import BASELINE_LABELS
    from ..tasks import get_task, higher_is_better

    baselines = summary.get("baselines") or {}
    test = summary["metrics"].get("test")
    if not baselines or test is None:
        return []
    metric = get_task(summary["task"]).primary[0]
    parts, best = [], None
    for name, row in baselines.items():
        label = BASELINE_LABELS.get(name, name)
        if "skipped" in row:
            parts.append(f"{label} skipped ({row['skipped']})")
            continue
        parts.append(f"{label} {metric} {row[metric]:.4f}")
        if best is None or (row[metric] > best[1]) == higher_is_better(metric):
            best = (label, row[metric])
    lines = ["baselines:  " + "   ".join(parts)]
    if best is not None:
        model = test[metric]
        beaten = (model > best[1]) == higher_is_better(metric) and model != best[1]
        lines.append(f"            the model {'beats' if beaten else 'does not beat'} the best "
                     f"baseline ({best[0]}, {metric} {best[1]:.4f}; model {model:.4f})")
    return lines
