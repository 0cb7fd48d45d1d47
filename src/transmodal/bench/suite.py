"""``transmodal bench suite``: every method side by side with strong baselines, published
figures and cost.

What runs (``transmodal bench suite --help`` lists every option):

- **data**: five UCR/UEA sets bundled with aeon on their default train/test split
  (ArrowHead, GunPoint, ItalyPowerDemand, OSULeaf, BasicMotions [multivariate, 6 channels]),
  scikit-learn's digits as 8x8 one-channel images, split once into halves, stratified,
  ``random_state=0`` (``DIGITS_SPLIT``), and the generated viscous-Burgers task of
  :func:`transmodal.pde.make_burgers` (u0 -> u(T), 256 train / 128 test on 128 points,
  seed 0; dense, scored by relative L2, lower is better). ``--data SPEC`` (repeatable) runs the
  same comparison on any dataset spec that ``transmodal fit`` accepts.
- **methods**: transmodal as ``align+tune`` pairs (``METHODS``: ORCA = otdd+full, vanilla
  fine-tuning = none+full, FPT = none+layernorm, frozen body = none+frozen, scratch =
  none+scratch; any other pair such as ``none+lora`` or ``none+hybrid:3`` can be named), each
  over ``--seeds`` seeds (mean and sample standard deviation); the baselines of
  ``bench/baselines.py`` (MiniRocket + ridge, linear, 1-NN), fitted once (they are
  deterministic up to MiniRocket's seed 0); and, for the UCR sets, the published default-split
  accuracies of ROCKET, MiniRocket and HIVE-COTE 2 (``bench/published.py``).
  A method whose fit raises ``ConfigError`` (e.g. an align stage or tune option not built in
  this version) is shown as "n/a (not available)", so the suite runs whatever exists.
- **budget**: every deep fit of a data set gets the same number of optimizer steps
  (``SUITE_BUDGETS``: steps, batch size, token cap; epochs = steps / steps-per-epoch, early
  stopping off, the best-validation epoch kept), so methods are compared at equal compute.
- **cost**: training wall time (align + refine), time per epoch, peak resident memory during
  the fit (and the CUDA peak on a GPU), training samples per second, and model FLOP
  utilisation: refine-stage model FLOPs per second over this machine's dense matmul rate,
  measured in the same run just before each fit (fp32 on CPU; bf16 on a GPU when training in
  bf16; on a shared CPU the load can change during a fit, so MFU is noisy and can exceed 1).
  Model FLOPs are counted by ``FlopCounterMode`` on the fitted model: one training step on a
  batch of preprocessed inputs (float32 (B, C, *spatial)), scaled per sample to the samples
  actually trained (= steps x per-step FLOPs when the batch divides the training set), plus
  the per-epoch validation forward passes, which the refine wall time also contains. The
  align stage's FLOPs are not counted (optimal transport is not matmul-only).

Outputs (``--out-dir``, default ``bench_results``): ``suite.csv`` (one row per data set x
method, aggregated), ``suite_runs.csv`` (one row per fit), ``suite.md`` (the tables),
``suite.json`` (settings, matmul rate, timings), ``<dataset>.png`` (test score per method with
std error bars; baselines and published figures as references). The tables also go into
README.md between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` for the full default
suite (or with ``--readme PATH``); the rest of the README is never touched.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transmodal.errors import ConfigError, TransmodalError

__all__ = [
    "Budget", "METHODS", "BASELINE_LABELS", "UCR_SETS", "SUITE_SETS", "SUITE_BUDGETS",
    "QUICK_SETS", "DIGITS_SPLIT", "BURGERS_TASK", "load_suite_dataset", "plan_fit",
    "estimate_fit_seconds", "aggregate", "render_markdown", "write_readme_table", "main",
]

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"

UCR_SETS = ("ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf", "BasicMotions")
SUITE_SETS = UCR_SETS + ("digits", "burgers")
QUICK_SETS = ("GunPoint", "ItalyPowerDemand")

# method key -> (label, align, tune). Any "ALIGN+TUNE" string works as a key as well.
METHODS: dict[str, tuple[str, str, str]] = {
    "orca": ("ORCA (otdd+full)", "otdd", "full"),
    "full": ("fine-tune (none+full)", "none", "full"),
    "layernorm": ("FPT (none+layernorm)", "none", "layernorm"),
    "frozen": ("frozen body (none+frozen)", "none", "frozen"),
    "scratch": ("scratch (none+scratch)", "none", "scratch"),
}
BASELINE_LABELS = {"minirocket": "MiniRocket+ridge", "linear": "linear (logistic/ridge)",
                   "1nn": "1-NN"}
PUBLISHED_LABELS = {"ROCKET": "ROCKET (pub.)", "MiniRocket": "MiniRocket (pub.)",
                    "HC2": "HC2 (pub.)"}

DIGITS_SPLIT = dict(test_size=0.5, random_state=0)  # stratified on the label
BURGERS_TASK = dict(n_train=256, n_test=128, grid=128, t_final=1.0, viscosity=0.1, seed=0)
USER_TEST_SPLIT = dict(test_size=0.3, random_state=0)  # only for --data without a test split


@dataclass(frozen=True)
class Budget:
    """Per data set: optimizer steps per deep fit, batch size and token cap."""

    steps: int
    batch_size: int = 16
    max_tokens: int = 32


# Chosen so that the full suite (7 sets x 5 methods x 3 seeds = 105 fits) fits in 60 minutes on
# 2 uncontended CPU cores with MiniLM. One GunPoint epoch (40 samples x 50 tokens, fully fine-tuned)
# takes ~1.1 s there, i.e. ~100-130 GFLOP/s of training; a step of batch 16 x 32 tokens is then
# ~0.3 s fully fine-tuned and ~2/3 of that with a frozen body (no weight gradients in the body).
# Budgets of 40-100 steps (~250k training sample-tokens per method over the 7 sets) give ~35 min
# of training, ~6 min of validation/test passes, ~5 min of model builds and FLOP counts and ~1 min
# of baselines: ~47 min, leaving ~13 min for ORCA's align stage once it lands.
# 32 tokens (not the fit default 64) halves the step time; every series here is <= 427 points, so
# patches stay <= 14 points. Steps go where the data need them: the small hard sets (ArrowHead,
# OSULeaf) get more, BasicMotions (solved by every method in DESIGN.md) fewer.
SUITE_BUDGETS: dict[str, Budget] = {
    "ArrowHead": Budget(steps=80),          # 29 train -> 2 steps/epoch -> 40 epochs, 32 tokens
    "GunPoint": Budget(steps=72),           # 40 train -> 3 steps/epoch -> 24 epochs, 30 tokens
    "ItalyPowerDemand": Budget(steps=80),   # 54 train -> 4 steps/epoch -> 20 epochs, 24 tokens
    "OSULeaf": Budget(steps=100),           # 160 train -> 10 steps/epoch -> 10 epochs, 31 tokens
    "BasicMotions": Budget(steps=40),       # 32 train -> 2 steps/epoch -> 20 epochs, 25 tokens
    "digits": Budget(steps=69, batch_size=32, max_tokens=16),  # 718 -> 23/epoch -> 3 epochs, 2x2 patches
    "burgers": Budget(steps=78),            # 205 train -> 13 steps/epoch -> 6 epochs, 32 tokens
}
DEFAULT_BUDGET = Budget(steps=100)  # --data sets not named above
QUICK_STEPS = 30
QUICK_ALIGN_EPOCHS = 2

# Estimate of the suite's wall time: analytic matmul FLOPs of the body at an assumed share of
# the measured matmul rate, plus a fixed cost per fit (model build, FLOP count, test pass).
ASSUMED_UTILISATION = 0.6
FIXED_SECONDS_PER_FIT = 3.0


# ----------------------------------------------------------------------------- data


@dataclass
class SuiteData:
    name: str
    dataset: Any  # transmodal.data.Dataset with a test split
    task: str
    budget: Budget
    note: str = ""

    @property
    def is_ucr(self) -> bool:
        return self.name in UCR_SETS


def load_suite_dataset(name: str) -> SuiteData:
    """A suite data set by name (``UCR_SETS``, ``digits``, ``burgers``) or a user spec."""
    from transmodal.data import Dataset, infer_task, load_dataset

    note = ""
    if name in UCR_SETS:
        ds = load_dataset(f"ucr:{name}")
        budget = SUITE_BUDGETS[name]
    elif name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = x.reshape(-1, 1, 8, 8).astype(np.float32)  # (N, 1, 8, 8) grey levels 0..16
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, stratify=y, **DIGITS_SPLIT)
        ds = Dataset(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), name="digits")
        budget = SUITE_BUDGETS[name]
        note = "sklearn load_digits, stratified 50/50 split, random_state=0"
    elif name == "burgers":
        from transmodal.pde import make_burgers

        task = make_burgers(**BURGERS_TASK)
        ds = Dataset(task.x_train, task.y_train, task.x_test, task.y_test, name="burgers")
        budget = SUITE_BUDGETS[name]
        note = "viscous Burgers u0 -> u(T=1), nu=0.1, 128 points, seed 0; relative L2"
    else:
        ds = load_dataset(name)
        short = name.split(":", 1)[1] if name.startswith("ucr:") else Path(name).stem or name
        ds.name = short
        budget = SUITE_BUDGETS.get(short, DEFAULT_BUDGET)
        if ds.x_test is None:
            from sklearn.model_selection import train_test_split

            strat = ds.y_train if infer_task(ds.x_train, ds.y_train) == "classification" else None
            x_tr, x_te, y_tr, y_te = train_test_split(ds.x_train, ds.y_train, stratify=strat,
                                                      **USER_TEST_SPLIT)
            ds = Dataset(x_tr, y_tr, x_te, y_te, name=ds.name, variable_length=ds.variable_length)
            note = "no test split given: 30% held out (stratified for labels), random_state=0"
        name = short
    task = infer_task(ds.x_train, ds.y_train)
    return SuiteData(name=name, dataset=ds, task=task, budget=budget, note=note)


# ----------------------------------------------------------------------------- planning


@dataclass
class FitPlan:
    n_train: int  # after the validation split
    n_val: int
    n_test: int
    batch_size: int
    max_tokens: int
    tokens: int
    steps_per_epoch: int
    epochs: int

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def plan_fit(data: SuiteData, budget: Budget, body_max_tokens: int | None = None,
             epochs: int | None = None, val_fraction: float = 0.2) -> FitPlan:
    """Epochs from the step budget, with the same validation split rule as ``fit``."""
    from transmodal.embedder import plan_patches, token_grid

    ds = data.dataset
    n = len(ds.y_train)
    n_val = max(1, int(round(val_fraction * n)))
    if data.task == "classification":
        n_val = max(n_val, len(np.unique(ds.y_train)))
    n_train = n - n_val
    per_epoch = math.ceil(n_train / budget.batch_size)
    if epochs is None:
        epochs = max(1, round(budget.steps / per_epoch))
    cap = budget.max_tokens if body_max_tokens is None else min(budget.max_tokens, body_max_tokens)
    spatial = tuple(ds.x_train.shape[2:])
    tokens = int(np.prod(token_grid(spatial, plan_patches(spatial, cap))))
    return FitPlan(n_train, n_val, len(ds.y_test), budget.batch_size, budget.max_tokens, tokens,
                   per_epoch, epochs)


def _body_dims(body: str) -> tuple[int, int, int, int] | None:
    """(hidden, layers, intermediate, max positions) of a transformer body, None if unknown."""
    try:
        from transmodal.body import load_body_config

        cfg = load_body_config(body)
    except TransmodalError:
        return None
    try:
        d, layers, inter = int(cfg.hidden_size), int(cfg.num_hidden_layers), int(cfg.intermediate_size)
    except (AttributeError, TypeError):
        return None
    offset = 2 if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    positions = int(getattr(cfg, "max_position_embeddings", 10**6)) - offset
    if getattr(cfg, "model_type", "") == "vit":
        positions = (int(cfg.image_size) // int(cfg.patch_size)) ** 2
    return d, layers, inter, positions


def estimate_fit_seconds(plan: FitPlan, dims: tuple[int, int, int, int], tune: str,
                         matmul_rate: float) -> float:
    """Rough wall time of one fit: analytic body FLOPs (QKV/O and MLP matmuls, attention) at
    ``ASSUMED_UTILISATION`` of the measured matmul rate, plus ``FIXED_SECONDS_PER_FIT``.
    A frozen body still back-propagates to the embedder (input gradients, no weight
    gradients): about 2 forward passes a step instead of 3. The align stage is not included."""
    d, layers, inter, _ = dims
    s = plan.tokens
    fwd_token = 2 * layers * (4 * d * d + 2 * d * inter) + 4 * layers * s * d
    factor = 2.0 if tune in ("frozen", "layernorm", "lora") else 3.0
    flops = fwd_token * s * (factor * plan.steps * plan.batch_size
                             + plan.epochs * plan.n_val + plan.n_test)
    return flops / (matmul_rate * ASSUMED_UTILISATION) + FIXED_SECONDS_PER_FIT


# ----------------------------------------------------------------------------- methods


def parse_methods(text: str) -> list[str]:
    keys = [m.strip() for m in text.split(",") if m.strip()]
    if not keys:
        raise ConfigError("--methods is empty")
    for k in keys:
        method_spec(k)
    return keys


def method_spec(key: str) -> tuple[str, str, str]:
    """(label, align, tune) for a named method or an ``ALIGN+TUNE`` pair."""
    if key in METHODS:
        return METHODS[key]
    if "+" in key:
        align, tune = key.split("+", 1)
        return key, align, tune
    raise ConfigError(f"unknown method {key!r}; use {', '.join(METHODS)} or ALIGN+TUNE "
                      "(e.g. none+lora, none+hybrid:3)")


def parse_baselines(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    names = [b.strip() for b in text.split(",") if b.strip()]
    for b in names:
        if b not in BASELINE_LABELS:
            raise ConfigError(f"unknown baseline {b!r}; choose from {', '.join(BASELINE_LABELS)} or none")
    return names


# ----------------------------------------------------------------------------- one deep fit


def count_model_flops(model: Any, input_shape: Sequence[int], batch: int) -> tuple[float, float]:
    """(training FLOPs per sample, forward FLOPs per sample) of ``model`` on float32 inputs
    shaped (batch, *input_shape), counted by ``FlopCounterMode`` (matmuls, convs, attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from transmodal.bench.cost import count_training_flops

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *input_shape, generator=gen).to(device)  # (B, C, *spatial)
    was_training = model.training
    try:
        model.train()  # the mode of a training step
        train = count_training_flops(model, x, lambda out: out.float().pow(2).mean())
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        fwd = counter.get_total_flops()
    finally:
        model.train(was_training)
    return train / batch, fwd / batch


def run_deep(data: SuiteData, key: str, seed: int, plan: FitPlan, opts: argparse.Namespace,
             rates: dict[str, float]) -> dict[str, Any]:
    """One fit; a record with scores and cost, or status n/a / failed."""
    import transmodal
    from transmodal.bench.cost import PeakMemory, model_flop_utilisation
    from transmodal.metrics import PRIMARY

    label, align, tune = method_spec(key)
    metric = PRIMARY[data.task][0]
    rec: dict[str, Any] = {"dataset": data.name, "method": key, "label": label, "kind": "deep",
                           "align": align, "tune": tune, "seed": seed, "metric": metric}
    options: dict[str, Any] = dict(body=opts.body, align=align, tune=tune, epochs=plan.epochs,
                                   batch_size=plan.batch_size, max_tokens=plan.max_tokens,
                                   seed=seed, patience=0, device=opts.device)
    if align != "none" and opts.align_epochs is not None:
        options["align_epochs"] = opts.align_epochs
    mem_device = "cuda" if opts.device.startswith("cuda") else None
    threads = getattr(opts, "threads_resolved", None)
    if threads:
        import torch

        # Only when it changed: re-setting the same count after numba had used OpenMP slowed
        # torch ~15x (baselines.py now keeps numba off OpenMP; this guards the rest).
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    # The MFU denominator is re-measured just before each fit: on a shared CPU the rate at the
    # start of a long suite says little about the rate an hour later.
    rates = _measure_rates(opts.device, repeats=5)
    t0 = time.perf_counter()
    try:
        with PeakMemory(device=mem_device) as mem:
            run = transmodal.fit(data.dataset, progress=False, **options)
    except ConfigError as e:
        rec.update(status="n/a", note=f"not available: {e}")
        return rec
    except Exception as e:  # one broken method must not lose an hour of results
        traceback.print_exc(file=sys.stderr)
        rec.update(status="failed", note=f"{type(e).__name__}: {e}")
        return rec
    wall = time.perf_counter() - t0
    s = run.summary
    times = s["times"]
    epochs_run = int(s["epochs_run"])
    steps = epochs_run * math.ceil(s["n_train"] / plan.batch_size)
    samples = s["n_train"] * epochs_run
    refine = float(times["refine"])
    rec.update(status="ok", test=float(s["metrics"]["test"][metric]),
               val=float(s["metrics"]["val"].get(metric, math.nan)),
               train_time_s=float(times["align"]) + refine, align_time_s=float(times["align"]),
               refine_time_s=refine, fit_wall_s=wall, epochs=epochs_run, steps=steps,
               time_per_epoch_s=refine / max(epochs_run, 1), samples_per_s=samples / refine,
               n_train=s["n_train"], batch_size=plan.batch_size, tokens=s["tokens"],
               trainable_params=int(s["trainable_params"]), device=s["device"],
               precision=s["precision"], best_epoch=s["best_epoch"])
    if mem.peak_rss_bytes is not None:
        rec["peak_rss_mb"] = mem.peak_rss_bytes / 2**20
    if mem.cuda_peak_bytes is not None:
        rec["gpu_peak_mb"] = mem.cuda_peak_bytes / 2**20
    try:
        train_ps, fwd_ps = count_model_flops(run.model, run.preprocessor.input_shape,
                                             min(plan.batch_size, s["n_train"]))
        flops = train_ps * samples + fwd_ps * s["n_val"] * epochs_run
        rate = rates["bf16"] if s["precision"] == "bf16" and "bf16" in rates else rates["fp32"]
        rec["matmul_gflops"] = rate / 1e9
        rec.update(train_flops=flops, train_flops_per_step=train_ps * plan.batch_size,
                   mfu=model_flop_utilisation(flops / refine, rate))
    except Exception as e:  # a FLOP count that fails leaves the scores standing
        rec["note"] = f"FLOPs not counted ({type(e).__name__}: {e})"
    del run
    gc.collect()
    return rec


def _measure_rates(device: str, repeats: int = 10) -> dict[str, float]:
    """Dense matmul FLOP/s on ``device``: fp32, and bf16 on a GPU (the rate bf16 training
    is held against)."""
    import torch

    from transmodal.bench.cost import measure_matmul_flops

    dev = device if device.startswith("cuda") else "cpu"
    rates = {"fp32": measure_matmul_flops(dev, torch.float32, size=1024, repeats=repeats)}
    if dev != "cpu":
        rates["bf16"] = measure_matmul_flops(dev, torch.bfloat16, size=4096, repeats=repeats)
    return rates


def run_baseline_rows(data: SuiteData, names: list[str]) -> list[dict[str, Any]]:
    from transmodal.bench.baselines import run_baselines
    from transmodal.metrics import PRIMARY

    if not names:
        return []
    ds = data.dataset
    metric = PRIMARY[data.task][0]
    rows = run_baselines(ds.x_train, ds.y_train, ds.x_test, ds.y_test, data.task, seed=0,
                         names=tuple(names))
    out = []
    for r in rows:
        rec: dict[str, Any] = {"dataset": data.name, "method": r["name"],
                               "label": BASELINE_LABELS[r["name"]], "kind": "baseline",
                               "seed": 0, "metric": metric}
        if "skipped" in r:
            rec.update(status="n/a", note=f"not applicable: {r['skipped']}")
        else:
            rec.update(status="ok", test=float(r[metric]), train_time_s=float(r["train_time_s"]),
                       samples_per_s=len(ds.y_train) / max(r["train_time_s"], 1e-9),
                       n_train=len(ds.y_train))
            if "peak_rss_mb" in r:
                rec["peak_rss_mb"] = float(r["peak_rss_mb"])
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- aggregation


COST_KEYS = ("train_time_s", "time_per_epoch_s", "peak_rss_mb", "gpu_peak_mb", "samples_per_s",
             "mfu", "matmul_gflops", "train_flops", "trainable_params", "epochs", "steps", "tokens", "fit_wall_s")


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, method) in first-seen order: mean/std of test over the seeds that
    ran, means of the cost columns; status ok, n/a (every seed n/a) or failed (any failed)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    rows = []
    for (dataset, method), recs in groups.items():
        ok = [r for r in recs if r["status"] == "ok"]
        first = recs[0]
        row: dict[str, Any] = {k: first.get(k) for k in ("dataset", "method", "label", "kind", "metric",
                                                          "align", "tune")}
        row["n_seeds"] = len(ok)
        if any(r["status"] == "failed" for r in recs):
            row["status"] = "failed"
        elif ok:
            row["status"] = "ok"
        else:
            row["status"] = "n/a"
        notes = sorted({r["note"] for r in recs if r.get("note")})
        row["note"] = "; ".join(notes)
        if ok:
            tests = [r["test"] for r in ok]
            row["test_mean"] = statistics.fmean(tests)
            row["test_std"] = statistics.stdev(tests) if len(tests) > 1 else math.nan
            vals = [r["val"] for r in ok if "val" in r and math.isfinite(r["val"])]
            row["val_mean"] = statistics.fmean(vals) if vals else math.nan
            for k in COST_KEYS:
                xs = [r[k] for r in ok if r.get(k) is not None and math.isfinite(r[k])]
                row[k] = statistics.fmean(xs) if xs else math.nan
        rows.append(row)
    return rows


def ucr_means(rows: list[dict[str, Any]], datasets: list[str]) -> dict[str, float]:
    """Per method: mean test accuracy over the UCR sets run, only if it has all of them."""
    ucr = [d for d in datasets if d in UCR_SETS]
    out: dict[str, float] = {}
    if not ucr:
        return out
    by = {(r["dataset"], r["method"]): r for r in rows}
    for method in dict.fromkeys(r["method"] for r in rows):
        vals = [by.get((d, method), {}).get("test_mean") for d in ucr]
        if all(v is not None and math.isfinite(v) for v in vals):
            out[method] = statistics.fmean(vals)
    return out


# ----------------------------------------------------------------------------- rendering


def _fmt(value: float | None, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if metric == "rel_l2" else f"{value:.3f}"


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    if row["status"] == "failed":
        return "failed"
    if row["status"] == "n/a":
        why = row.get("note", "")
        return "n/a (not applicable)" if "not applicable" in why else "n/a (not available)"
    text = _fmt(row["test_mean"], row["metric"])
    if row["n_seeds"] > 1 and math.isfinite(row["test_std"]):
        text += f" ± {_fmt(row['test_std'], row['metric'])}"
    return text


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


PUBLISHED_NOTE = (
    "Published figures (default UCR train/test split; n/a = none found offline, see "
    "`transmodal/bench/published.py`): ROCKET, Dempster, Petitjean & Webb 2020 (DMKD 34(5)), "
    "github.com/angus924/rocket `results/results_ucr.csv`; MiniRocket, Dempster, Schmidt & Webb "
    "2021 (KDD), github.com/angus924/minirocket `results/accuracy_ucr109_resamples.csv`, "
    "resample 0; HIVE-COTE 2 (HC2), Middlehurst et al. 2021 (Machine Learning 110), tsml "
    "reference results shipped in aeon 1.6.0 (`HC2_accuracy.csv`, resample 0)."
)


def render_markdown(rows: list[dict[str, Any]], datasets: list[str], methods: list[str],
                    baselines: list[str], meta: dict[str, Any]) -> str:
    from transmodal.bench.published import METHODS as PUB_METHODS, published_accuracy

    by = {(r["dataset"], r["method"]): r for r in rows}
    any_ucr = any(d in UCR_SETS or d in _published_sets() for d in datasets)
    lines = [
        f"**transmodal bench suite** ({meta['when']}): body `{meta['body']}`, device "
        f"{meta['device']}, {meta['threads']} torch thread(s), {meta['seeds']} seed(s) per deep "
        f"method, dense matmul rate {meta['matmul_gflops']:.1f} GFLOP/s ({meta['rate_dtype']}, "
        f"measured at the start of this run{meta.get('rate_range', '')}), load average {meta['load_start']:.1f} at start on "
        f"{meta['cpus']} CPU(s). Total {meta['total_min']:.1f} min (estimated "
        f"{meta['estimate_min']})."
        + (" **Interrupted: only the fits that finished are shown.**" if meta.get("interrupted") else ""),
        "",
        "Test score: mean ± sample std over seeds (accuracy, higher is better; `burgers`: "
        "relative L2, lower is better). **Bold**: best of the methods run here.",
        "",
    ]
    cols = [method_spec(m)[0] for m in methods] + [BASELINE_LABELS[b] for b in baselines]
    if any_ucr:
        cols += [PUBLISHED_LABELS[m] for m in PUB_METHODS]
    lines.append("| data | metric | " + " | ".join(cols) + " |")
    lines.append("|---|---|" + "---|" * len(cols))
    for d in datasets:
        run_rows = [by.get((d, m)) for m in methods + baselines]
        metric = next((r["metric"] for r in run_rows if r is not None), "accuracy")
        vals = [r["test_mean"] for r in run_rows if r is not None and r["status"] == "ok"]
        best = (min(vals) if metric == "rel_l2" else max(vals)) if vals else None
        cells = []
        for r in run_rows:
            c = _cell(r)
            if r is not None and r["status"] == "ok" and best is not None and r["test_mean"] == best:
                c = f"**{c}**"
            cells.append(c)
        if any_ucr:
            if d in UCR_SETS or d in _published_sets():
                cells += [_fmt(published_accuracy(d, m), "accuracy") for m in PUB_METHODS]
            else:
                cells += ["–"] * len(PUB_METHODS)
        lines.append(f"| {d} | {metric} | " + " | ".join(cells) + " |")
    means = ucr_means(rows, datasets)
    ucr = [d for d in datasets if d in UCR_SETS]
    if means and len(ucr) > 1:
        cells = [_fmt(means.get(m), "accuracy") for m in methods + baselines]
        if any_ucr:
            pub = [[published_accuracy(d, m) for d in ucr] for m in PUB_METHODS]
            cells += [_fmt(statistics.fmean(v), "accuracy") if all(x is not None for x in v) else "n/a"
                      for v in pub]
        lines.append(f"| **UCR mean ({len(ucr)} sets)** | accuracy | " + " | ".join(cells) + " |")
    lines.append("")
    if any_ucr:
        lines += [PUBLISHED_NOTE, ""]
    target = _target_lines(means, methods, ucr)
    lines += [*target, ""] if target else []
    lines += ["Cost per method (means over seeds). Train time: align + refine wall time; "
              "peak RSS: process resident memory during the fit; samples/s: training samples "
              "per second of refine; MFU: refine-stage model FLOPs per second (FlopCounterMode "
              "count: training steps + validation passes) over the measured matmul rate.", ""]
    gpu = any(isinstance(r.get("gpu_peak_mb"), float) and math.isfinite(r["gpu_peak_mb"]) for r in rows)
    head = ["data", "method", "test", "train s", "s/epoch", "peak RSS MB"]
    head += ["GPU peak MB"] if gpu else []
    head += ["samples/s", "MFU", "trainable params", "epochs x steps"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for d in datasets:
        for m in methods + baselines:
            r = by.get((d, m))
            if r is None:
                continue
            ok = r["status"] == "ok"
            g = (lambda k: r.get(k) if ok else None)
            cells = [d, r["label"], _cell(r), _num(g("train_time_s"), ".1f"),
                     _num(g("time_per_epoch_s"), ".2f"), _num(g("peak_rss_mb"), ".0f")]
            if gpu:
                cells.append(_num(g("gpu_peak_mb"), ".0f"))
            mfu = g("mfu")
            steps = (f"{g('epochs'):.0f} x {g('steps') / max(g('epochs'), 1):.0f}"
                     if ok and r["kind"] == "deep" and math.isfinite(r.get("steps", math.nan)) else "–")
            cells += [_num(g("samples_per_s"), ".1f"),
                      "–" if mfu is None or not math.isfinite(mfu) else f"{100 * mfu:.1f}%",
                      _num(int(g("trainable_params")) if ok and r["kind"] == "deep"
                           and math.isfinite(r.get("trainable_params", math.nan)) else None, ","),
                      steps]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Budgets (same optimizer steps for every deep method of a data set; early "
              "stopping off; best-validation epoch kept; validation = 20% of the training split):",
              "", "| data | train/val/test | batch | token cap (tokens) | steps/epoch | epochs | steps |",
              "|---|---|---|---|---|---|---|"]
    for d, p in meta["plans"].items():
        lines.append(f"| {d} | {p['n_train']}/{p['n_val']}/{p['n_test']} | {p['batch_size']} | "
                     f"{p['max_tokens']} ({p['tokens']}) | {p['steps_per_epoch']} | {p['epochs']} | "
                     f"{p['steps']} |")
    notes = [f"- {d}: {n}" for d, n in meta.get("notes", {}).items() if n]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _published_sets() -> set[str]:
    from transmodal.bench.published import PUBLISHED

    return set(PUBLISHED)


def _target_lines(means: dict[str, float], methods: list[str], ucr: list[str]) -> list[str]:
    """The issue's target, stated from the numbers of this run only."""
    if len(ucr) < len(UCR_SETS):
        return []
    orca = means.get("orca")
    if orca is None:
        return ["Target (ORCA mean UCR accuracy >= MiniRocket's, > fine-tune and scratch): "
                "not evaluated, ORCA has no result for every UCR set in this run."]
    parts = []
    for key, label, rel in (("minirocket", "MiniRocket+ridge", ">="), ("full", "fine-tune", ">"),
                            ("scratch", "scratch", ">")):
        other = means.get(key)
        if other is None:
            parts.append(f"{label}: not run")
            continue
        met = orca >= other if rel == ">=" else orca > other
        parts.append(f"{label} {other:.3f} ({'met' if met else 'NOT met'})")
    return [f"Target: ORCA mean UCR accuracy {orca:.3f} vs " + ", ".join(parts) + "."]


def plot_dataset(rows: list[dict[str, Any]], dataset: str, methods: list[str],
                 baselines: list[str], path: Path) -> None:
    """Bar chart: deep methods (mean ± std), baselines (grey), published (dashed lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transmodal.bench.published import METHODS as PUB_METHODS, published_accuracy

    by = {(r["dataset"], r["method"]): r for r in rows}
    keys = [m for m in methods + baselines if (dataset, m) in by]
    if not keys:
        return
    metric = by[(dataset, keys[0])]["metric"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(keys) + 2), 4.2))
    xs = np.arange(len(keys))
    for i, k in enumerate(keys):
        r = by[(dataset, k)]
        colour = "tab:blue" if r["kind"] == "deep" else "tab:gray"
        if r["status"] == "ok":
            std = r.get("test_std", math.nan)
            err = std if r["kind"] == "deep" and math.isfinite(std) else None  # 1 seed: no bar
            ax.bar(i, r["test_mean"], yerr=err, capsize=4, color=colour, alpha=0.85)
            ax.text(i, r["test_mean"], _fmt(r["test_mean"], metric), ha="center", va="bottom",
                    fontsize=7)
        else:
            ax.text(i, 0.02, "n/a" if r["status"] == "n/a" else "failed", ha="center",
                    va="bottom", fontsize=8, rotation=90)
    styles = ("--", ":", "-.")
    for style, m in zip(styles, PUB_METHODS):
        v = published_accuracy(dataset, m) if metric == "accuracy" else None
        if v is not None:
            ax.axhline(v, linestyle=style, color="black", linewidth=1, label=f"{m} (published)")
    ax.set_xticks(xs)
    ax.set_xticklabels([by[(dataset, k)]["label"] for k in keys], rotation=30, ha="right",
                       fontsize=8)
    ax.set_ylabel(f"test {metric}" + (" (lower is better)" if metric == "rel_l2" else ""))
    if metric == "accuracy":
        ax.set_ylim(0, 1.05)
    ax.set_title(f"{dataset}: transmodal methods (blue, mean ± std) vs baselines (grey)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_readme_table(readme: Path, markdown: str) -> bool:
    """Replace the text between the bench markers of ``readme``; True if written.

    A missing file or missing markers print why and change nothing."""
    readme = Path(readme)
    if not readme.exists():
        print(f"README not written: {readme} does not exist (the table is in suite.md)")
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0 or end < start:
        print(f"README not written: {readme} has no '{README_START}' ... '{README_END}' markers; "
              "add them where the table should go (the table is in suite.md)")
        return False
    new = text[: start + len(README_START)] + "\n" + markdown.rstrip("\n") + "\n" + text[end:]
    tmp = readme.with_name(readme.name + ".bench.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, readme)
    print(f"table written into {readme} between the bench markers")
    return True


CSV_COLUMNS = ("dataset", "method", "label", "kind", "align", "tune", "status", "metric",
               "n_seeds", "test_mean", "test_std", "val_mean") + COST_KEYS + ("note",)
RUN_COLUMNS = ("dataset", "method", "label", "kind", "align", "tune", "seed", "status", "metric",
               "test", "val", "train_time_s", "align_time_s", "refine_time_s", "fit_wall_s",
               "time_per_epoch_s", "epochs", "best_epoch", "steps", "batch_size", "tokens",
               "n_train", "samples_per_s", "train_flops", "train_flops_per_step", "mfu", "matmul_gflops",
               "peak_rss_mb", "gpu_peak_mb", "trainable_params", "device", "precision", "note")


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k]))
                            else r[k]) for k in columns})
    os.replace(tmp, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "data"


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="transmodal bench suite",
        description="Every transmodal method side by side with MiniRocket, linear and 1-NN "
                    "baselines, published figures and cost (time, memory, samples/s, MFU).")
    p.add_argument("--quick", action="store_true",
                   help=f"1 seed, {QUICK_STEPS} steps a fit, {' + '.join(QUICK_SETS)}: a few minutes")
    p.add_argument("--datasets", help=f"comma list from {', '.join(SUITE_SETS)} (default: all)")
    p.add_argument("--data", action="append", default=[], metavar="SPEC",
                   help="run the comparison on this dataset spec instead (repeatable; "
                        "ucr:NAME, x.npz, x.csv, folder:PATH)")
    p.add_argument("--methods", help=f"comma list of {', '.join(METHODS)} or ALIGN+TUNE pairs "
                                     "(default: all five)")
    p.add_argument("--baselines", default="minirocket,linear,1nn",
                   help="comma list of minirocket, linear, 1nn, or none")
    p.add_argument("--seeds", type=int, help="seeds per deep method (default 3; --quick 1)")
    p.add_argument("--steps", type=int, help="optimizer steps per fit for every data set "
                                             "(default: per data set, see SUITE_BUDGETS)")
    p.add_argument("--epochs", type=int, help="fixed epochs per fit (overrides the step budget)")
    p.add_argument("--batch-size", type=int, help="override every data set's batch size")
    p.add_argument("--max-tokens", type=int, help="override every data set's token cap")
    p.add_argument("--align-epochs", type=int,
                   help=f"align epochs for methods with an align stage (default: fit's; --quick "
                        f"{QUICK_ALIGN_EPOCHS})")
    p.add_argument("--body", default="minilm", help="pretrained body (default minilm)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda[:N] (default auto)")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's choice; 1 when another job holds a "
                        "core. --quick took 1.7 min on 2 idle threads, 2.6 min on 1 thread beside "
                        "a busy core)")
    p.add_argument("--out-dir", default="bench_results", help="CSV, markdown, JSON and PNG folder")
    p.add_argument("--readme", help="README to write the table into, between the bench markers "
                                    "(default: ./README.md for the full default suite only)")
    p.add_argument("--no-readme", action="store_true", help="never write a README")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimate, run nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    try:
        return _main(args)
    except TransmodalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # --threads is for this benchmark only


def _main(args: argparse.Namespace) -> int:
    import torch

    t_start = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    for name in ("seeds", "steps", "epochs", "batch_size", "max_tokens"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA GPU is visible; use --device cpu")
    seeds = args.seeds or (1 if args.quick else 3)
    methods = parse_methods(args.methods) if args.methods else list(METHODS)
    baselines = parse_baselines(args.baselines)
    if args.quick and args.align_epochs is None:
        args.align_epochs = QUICK_ALIGN_EPOCHS
    if args.data:
        names = list(args.data)
    elif args.datasets:
        names = [d.strip() for d in args.datasets.split(",") if d.strip()]
        unknown = [d for d in names if d not in SUITE_SETS]
        if unknown:
            raise ConfigError(f"unknown suite data set(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(SUITE_SETS)} or use --data SPEC")
    else:
        names = list(QUICK_SETS if args.quick else SUITE_SETS)
    full_default = not (args.quick or args.data or args.datasets or args.methods or args.seeds
                        or args.steps or args.epochs or args.batch_size or args.max_tokens)
    readme = None if args.no_readme else (Path(args.readme) if args.readme else
                                          (Path("README.md") if full_default else None))

    # --- device and matmul rate (the MFU denominator), measured in this run
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
    args.device = device  # fits, memory peaks and the matmul rate all use the resolved device
    rate_device = device if device.startswith("cuda") else "cpu"
    rates = _measure_rates(device)
    rate_dtype = "bf16" if "bf16" in rates else "fp32"
    threads = args.threads_resolved = torch.get_num_threads()
    load_start = os.getloadavg()[0]
    print(f"matmul rate: {rates['fp32'] / 1e9:.1f} GFLOP/s fp32"
          + (f", {rates['bf16'] / 1e9:.1f} GFLOP/s bf16" if "bf16" in rates else "")
          + f" on {rate_device} ({threads} torch threads; load average {load_start:.1f} on "
            f"{os.cpu_count()} CPUs{', shared: timings are contended' if load_start > (os.cpu_count() or 1) else ''})")

    # --- data and plan
    dims = _body_dims(args.body)
    suite: list[tuple[SuiteData, FitPlan]] = []
    for name in names:
        data = load_suite_dataset(name)
        b = data.budget
        if args.quick:
            b = Budget(QUICK_STEPS, b.batch_size, b.max_tokens)
        b = Budget(args.steps or b.steps, args.batch_size or b.batch_size, args.max_tokens or b.max_tokens)
        suite.append((data, plan_fit(data, b, dims[3] if dims else None, args.epochs)))
    n_fits = len(suite) * len(methods) * seeds
    estimate = None
    if dims is not None:
        est_rate = rates.get("bf16", rates["fp32"])
        estimate = sum(estimate_fit_seconds(plan, dims, method_spec(m)[2], est_rate) * seeds
                       for data, plan in suite for m in methods)
        estimate += 10.0 * len(suite) * (len(baselines) > 0)  # baselines: seconds per data set
    est_text = "n/a (body size unknown)" if estimate is None else f"{estimate / 60:.1f} min"
    print(f"plan: {len(suite)} data set(s) x {len(methods)} method(s) x {seeds} seed(s) = "
          f"{n_fits} deep fits + baselines; estimated {est_text} "
          f"(assumes {ASSUMED_UTILISATION:.0%} of the matmul rate, {FIXED_SECONDS_PER_FIT:.0f} s "
          "per fit besides, align stages not included)")
    for data, plan in suite:
        print(f"  {data.name:<18} {data.task:<14} train/val/test {plan.n_train}/{plan.n_val}/"
              f"{plan.n_test}  batch {plan.batch_size}  tokens {plan.tokens} (cap {plan.max_tokens})"
              f"  {plan.epochs} epochs x {plan.steps_per_epoch} steps = {plan.steps} steps")
    if args.dry_run:
        return 0

    # --- run
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    done = 0
    interrupted = False
    try:
        for data, plan in suite:
            t0 = time.perf_counter()
            records += run_baseline_rows(data, baselines)
            for r in records:
                if r["dataset"] == data.name and r["kind"] == "baseline":
                    shown = _fmt(r.get("test"), r["metric"]) if r["status"] == "ok" else r["status"]
                    print(f"  {data.name:<18} {r['label']:<28} {r['metric']} {shown}")
            print(f"  {data.name}: baselines took {time.perf_counter() - t0:.1f} s")
            for m in methods:
                unavailable = False
                for seed in range(seeds):
                    done += 1
                    if unavailable:  # the first seed said this method does not exist here
                        rec = {**records[-1], "seed": seed}
                    else:
                        rec = run_deep(data, m, seed, plan, args, rates)
                        unavailable = rec["status"] == "n/a"
                    records.append(rec)
                    elapsed = time.perf_counter() - t_start
                    shown = (_fmt(rec["test"], rec["metric"]) if rec["status"] == "ok"
                             else f"{rec['status']} ({rec.get('note', '')[:90]})")
                    took = f"{rec['fit_wall_s']:.1f} s" if "fit_wall_s" in rec else "-"
                    print(f"[{done:>3}/{n_fits}] {data.name:<18} {method_spec(m)[0]:<28} seed {seed}  "
                          f"{rec['metric']} {shown}  {took}  (elapsed {elapsed / 60:.1f} min)", flush=True)
            _write_csv(out_dir / "suite_runs.csv", records, RUN_COLUMNS)  # partial results survive
    except KeyboardInterrupt:  # Ctrl-C: keep and report every fit that finished
        interrupted = True
        print("interrupted: writing the results of the fits that finished", file=sys.stderr)

    # --- outputs
    rows = aggregate(records)
    total = time.perf_counter() - t_start
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "body": args.body, "device": device,
        "threads": threads, "seeds": seeds, "matmul_gflops": rates.get("bf16", rates["fp32"]) / 1e9,
        "rate_dtype": rate_dtype, "load_start": load_start, "load_end": os.getloadavg()[0],
        "cpus": os.cpu_count(), "total_min": total / 60, "estimate_min": est_text,
        "plans": {d.name: {**vars(p), "steps": p.steps} for d, p in suite},
        "notes": {d.name: d.note for d, _ in suite},
        "interrupted": interrupted,
    }
    per_fit = [r["matmul_gflops"] for r in records if r.get("matmul_gflops")]
    if per_fit:
        meta["rate_range"] = (f"; {min(per_fit):.1f}-{max(per_fit):.1f} GFLOP/s before the "
                              f"{len(per_fit)} fits, each fit's MFU uses its own")
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    markdown = render_markdown(rows, datasets, methods, baselines, meta)
    _write_csv(out_dir / "suite_runs.csv", records, RUN_COLUMNS)
    _write_csv(out_dir / "suite.csv", rows, CSV_COLUMNS)
    (out_dir / "suite.md").write_text(markdown, encoding="utf-8")
    (out_dir / "suite.json").write_text(json.dumps(
        {**meta, "matmul_rates": rates, "methods": methods, "baselines": baselines,
         "estimate_s": estimate, "total_s": total}, indent=1, default=str), encoding="utf-8")
    for d in datasets:
        plot_dataset(rows, d, methods, baselines, out_dir / f"{_slug(d)}.png")
    print()
    print(markdown)
    print(f"estimated {est_text}, actual {total / 60:.1f} min; load average {load_start:.1f} at "
          f"start, {meta['load_end']:.1f} at the end")
    print(f"wrote {out_dir}/suite.csv, suite_runs.csv, suite.md, suite.json and "
          f"{len(datasets)} PNG chart(s)")
    if readme is not None:
        write_readme_table(readme, markdown)
    if interrupted:
        return 130
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} method(s) failed: " + ", ".join(f"{r['dataset']}/{r['method']}"
                                                           for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
