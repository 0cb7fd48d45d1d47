"""The suite's markdown: score table (with published figures), cost table and budgets."""

from __future__ import annotations

import math
import statistics
from typing import Any

from transmodal.bench.suite_aggregate import ucr_means
from transmodal.bench.suite_data import UCR_SETS
from transmodal.bench.suite_methods import BASELINE_LABELS, method_spec
from transmodal.tasks import higher_is_better

PUBLISHED_LABELS = {"ROCKET": "ROCKET (pub.)", "MiniRocket": "MiniRocket (pub.)",
                    "HC2": "HC2 (pub.)"}


def _fmt(value: float | None, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if higher_is_better(metric) else f"{value:.4f}"


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
        best = (max(vals) if higher_is_better(metric) else min(vals)) if vals else None
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
