"""Does alignment help on *your* data? Align epochs x seeds, mean and std of the test score.

``transmodal bench ablate --data ucr:GunPoint [--align otdd] [--align-epochs 0 5 20] [--seeds 0 1 2]``

A published ablation of align-then-refine (Garcia-de-Herreros et al., 2024) found that
alignment helps 1-D tasks a little and 2-D tasks not at all; this table shows which case a
dataset is in instead of assuming. Everything except the number of align epochs is the same
in every row (same seeds, same refine budget), and the test split is scored once per fit.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..tasks import get_task


def run(data: str, align: str, align_epochs: Sequence[int], seeds: Sequence[int],
        fit_options: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (align epochs, seed): the fit's final scores and timings."""
    from ..run import fit

    rows = []
    for epochs in align_epochs:
        for seed in seeds:
            t0 = time.perf_counter()
            r = fit(data, align=align if epochs > 0 else "none", align_epochs=epochs, seed=seed,
                    progress=False, baselines="none", **fit_options)  # timed: fit only
            m = r.summary["metrics"]
            rows.append({"align_epochs": epochs, "seed": seed, "task": r.summary["task"],
                         **{f"val_{k}": v for k, v in m["val"].items()},
                         **{f"test_{k}": v for k, v in m.get("test", {}).items()},
                         "align_s": r.summary["times"]["align"], "total_s": time.perf_counter() - t0})
            print(f"  align_epochs={epochs} seed={seed}: test "
                  + ", ".join(f"{k} {v:.4f}" for k, v in m.get("test", {}).items()), flush=True)
    return rows


def table(rows: list[dict[str, Any]], data: str, align: str) -> str:
    task = rows[0]["task"]
    metric, higher = get_task(task).primary
    key = f"test_{metric}" if f"test_{metric}" in rows[0] else f"val_{metric}"
    lines = [f"Ablation on {data}: --align {align}, {key} over seeds ({'higher' if higher else 'lower'} is better)",
             "", f"| align epochs | {key} mean | std | seeds | align time (s) |", "|---:|---:|---:|---:|---:|"]
    for epochs in sorted({r["align_epochs"] for r in rows}):
        sel = [r for r in rows if r["align_epochs"] == epochs]
        vals = [r[key] for r in sel]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(f"| {epochs} | {statistics.mean(vals):.4f} | {std:.4f} | {len(vals)} | "
                     f"{statistics.mean(r['align_s'] for r in sel):.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="transmodal bench ablate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="any fit data spec, e.g. ucr:GunPoint")
    p.add_argument("--align", default="otdd", choices=["otdd", "mmd", "l2"])
    p.add_argument("--align-epochs", type=int, nargs="+", default=[0, 5, 20])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="refine epochs (default: fit's)")
    p.add_argument("--body", default=None)
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = p.parse_args(argv)
    opts = {k: v for k, v in {"epochs": args.epochs, "body": args.body}.items() if v is not None}
    rows = run(args.data, args.align, args.align_epochs, args.seeds, opts)
    print(table(rows, args.data, args.align))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
