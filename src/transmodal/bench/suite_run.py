"""Running the suite: one deep fit with its cost, the matmul rate, and the baseline rows.

A method whose fit raises ``ConfigError`` (e.g. an align stage or tune option not built in
this version) is shown as "n/a (not available)", so the suite runs whatever exists.

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
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import traceback
from typing import Any, Sequence

from transmodal.bench.suite_data import SuiteData
from transmodal.bench.suite_methods import BASELINE_LABELS, method_spec
from transmodal.bench.suite_plan import FitPlan
from transmodal.errors import ConfigError


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
    from transmodal.tasks import get_task

    label, align, tune = method_spec(key)
    metric = get_task(data.task).primary[0]
    rec: dict[str, Any] = {"dataset": data.name, "method": key, "label": label, "kind": "deep",
                           "align": align, "tune": tune, "seed": seed, "metric": metric}
    options: dict[str, Any] = dict(body=opts.body, align=align, tune=tune, epochs=plan.epochs,
                                   batch_size=plan.batch_size, max_tokens=plan.max_tokens,
                                   seed=seed, patience=0, device=opts.device,
                                   baselines="none")  # the suite scores its baselines once
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
    from transmodal.tasks import get_task

    if not names:
        return []
    ds = data.dataset
    metric = get_task(data.task).primary[0]
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
