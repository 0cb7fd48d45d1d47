"""``transmodal bench suite``: every method side by side with strong baselines, published
figures and cost.

What runs (``transmodal bench suite --help`` lists every option) is described next to the
code that does it:

- ``suite_data.py``: the data sets (five UCR/UEA sets, digits, Burgers, ``--data SPEC``);
- ``suite_plan.py``: the budgets (equal optimizer steps per data set) and the time estimate;
- ``suite_methods.py``: the methods (``align+tune`` pairs), baselines and published figures;
- ``suite_run.py``: one deep fit and its cost (time, memory, samples/s, MFU), the baselines;
- ``suite_aggregate.py``: mean and std over seeds, UCR means;
- ``suite_tables.py``: the markdown tables; ``suite_output.py``: CSV, PNG and README files.

This module is the command line, and re-exports the names above that callers and tests use.

Outputs (``--out-dir``, default ``bench_results``): ``suite.csv`` (one row per data set x
method, aggregated), ``suite_runs.csv`` (one row per fit), ``suite.md`` (the tables),
``suite.json`` (settings, matmul rate, timings), ``<dataset>.png`` (test score per method with
std error bars; baselines and published figures as references). With ``--readme PATH`` the
tables also go into that README between ``<!-- bench:start -->`` and ``<!-- bench:end -->``;
the rest of it is never touched, and no README is written without ``--readme``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

# Every name that used to live here is imported back, so that ``suite.X`` keeps working.
from transmodal.bench.suite_aggregate import COST_KEYS, aggregate, ucr_means  # noqa: F401
from transmodal.bench.suite_data import (  # noqa: F401
    BURGERS_TASK, DIGITS_SPLIT, QUICK_SETS, SUITE_SETS, UCR_SETS, USER_TEST_SPLIT, SuiteData,
    load_suite_dataset)
from transmodal.bench.suite_methods import (  # noqa: F401
    BASELINE_LABELS, METHODS, method_spec, parse_baselines, parse_methods)
from transmodal.bench.suite_output import (  # noqa: F401
    CSV_COLUMNS, README_END, README_START, RUN_COLUMNS, _slug, _write_csv, plot_dataset,
    write_readme_table)
from transmodal.bench.suite_plan import (  # noqa: F401
    ASSUMED_UTILISATION, DEFAULT_BUDGET, FIXED_SECONDS_PER_FIT, QUICK_ALIGN_EPOCHS, QUICK_STEPS,
    SUITE_BUDGETS, Budget, FitPlan, _body_dims, estimate_fit_seconds, plan_fit)
from transmodal.bench.suite_run import (  # noqa: F401
    _measure_rates, count_model_flops, run_baseline_rows, run_deep)
from transmodal.bench.suite_tables import (  # noqa: F401
    PUBLISHED_LABELS, PUBLISHED_NOTE, _fmt, render_markdown)
from transmodal.errors import ConfigError, TransmodalError

__all__ = [
    "Budget", "METHODS", "BASELINE_LABELS", "UCR_SETS", "SUITE_SETS", "SUITE_BUDGETS",
    "QUICK_SETS", "DIGITS_SPLIT", "BURGERS_TASK", "load_suite_dataset", "plan_fit",
    "estimate_fit_seconds", "aggregate", "render_markdown", "write_readme_table", "main",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False, prog="transmodal bench suite",
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
                                    "(default: none; this repository's is written with "
                                    "--readme README.md)")
    p.add_argument("--no-readme", action="store_true", help="write no README (the default now; "
                                                            "kept for old scripts)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimate, run nothing")
    return p


def readme_path(args: argparse.Namespace) -> Path | None:
    """The README to write the tables into: only one named with ``--readme`` (a suite run in the
    user's folder must never rewrite the README there)."""
    return Path(args.readme) if args.readme and not args.no_readme else None


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
    readme = readme_path(args)

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
