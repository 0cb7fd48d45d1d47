"""Aggregation: per-fit records to one row per (data set, method), and UCR means."""

from __future__ import annotations

import math
import statistics
from typing import Any

from transmodal.bench.suite_data import UCR_SETS


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
