"""``transmodal bench defaults``: what a user gets from ``fit`` at its defaults, per set and seed.

The suite (``bench suite``) compares methods at fixed small step budgets; this benchmark runs
``fit`` exactly as a user would (its defaults, plus only the options given here, the same for
every set: no per-dataset tuning) on the development sets, and prints per set: the run's test
score, the transformer part alone, MiniRocket and the linear baseline on the same split, what
``--method auto`` chose out-of-fold (when given), and the wall time. The test split is scored
once at the end of each fit; nothing is chosen on it.

    transmodal bench defaults --sets GunPoint,ArrowHead --seeds 0,1,2 --fit method=auto
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

DEV_SETS = ("GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions", "OSULeaf")


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def run_one(name: str, seed: int, options: dict[str, Any], out: Path) -> dict[str, Any]:
    """One fit at the defaults + ``options``; its scores and parts, from summary.json."""
    import transmodal

    t0 = time.perf_counter()
    run = transmodal.fit(f"ucr:{name}", out=out / f"{name}-seed{seed}", overwrite=True,
                         progress=False, seed=seed, baselines="all", **options)
    return row_from_summary(name, seed, run.summary, time.perf_counter() - t0)


def row_from_summary(name: str, seed: int, s: dict[str, Any], seconds: float) -> dict[str, Any]:
    """A results.jsonl row from a run's summary.json: test and validation accuracy, the model's
    own score beside its rivals, the baselines, and each model's kept and last epoch."""
    metric = "accuracy"
    row: dict[str, Any] = {"set": name, "seed": seed, "test": s["metrics"]["test"][metric],
                           "val": s["metrics"]["val"].get(metric), "seconds": seconds}
    parts = s.get("components_test") or {}
    row["model_alone"] = parts.get("model", {}).get(metric, row["test"] if "auto" not in s else None)
    for b in ("minirocket", "linear"):
        row[b] = (s["baselines"].get(b) or {}).get(metric)
    if "auto" in s:
        a = s["auto"]
        row["auto_choice"] = ("model" if a["rival"] is None else
                              f"{a['model_weight']:.1f} model + {1 - a['model_weight']:.1f} {a['rival']}")
        if "loss_gain" in a:  # the guard: how far the best candidate beat the baseline
            gain, se = a["loss_gain"], a["loss_gain_se"]
            z = gain / se if se > 0 else (float("inf") if gain > 0 else 0.0)
            row["auto_choice"] += f" (best candidate {z:+.1f} se)"
        row["auto_oof"] = a["out_of_fold"]
    members = s.get("members") or [s]  # epochs per model: kept, and run (early stopping)
    row["best_epochs"] = [m["best_epoch"] for m in members]
    row["epochs_run"] = [m["epochs_run"] for m in members]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per set (mean ± std over seeds), then the mean over sets."""
    def ms(values: list[float]) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["| set | seeds | run (test acc) | transformer alone | MiniRocket | linear | auto chose | time per fit (s) |",
             "|---|---|---|---|---|---|---|---|"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for name in sets:
        rs = [r for r in rows if r["set"] == name]
        chose = "; ".join(r.get("auto_choice", "") for r in rs if r.get("auto_choice"))
        lines.append(f"| {name} | {len(rs)} | {ms([r['test'] for r in rs])} | "
                     f"{ms([r['model_alone'] for r in rs])} | {ms([r['minirocket'] for r in rs])} | "
                     f"{ms([r['linear'] for r in rs])} | {chose or '-'} | "
                     f"{statistics.median([r['seconds'] for r in rs]):.0f} |")
    if len(sets) > 1:
        def mean_of(key: str) -> str:
            per_set = [statistics.mean([r[key] for r in rows if r["set"] == n and r[key] is not None] or [float("nan")])
                       for n in sets]
            return f"{statistics.mean(per_set):.3f}"

        lines.append(f"| mean of {len(sets)} sets | | {mean_of('test')} | {mean_of('model_alone')} | "
                     f"{mean_of('minirocket')} | {mean_of('linear')} | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="transmodal bench defaults", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--sets", default=",".join(DEV_SETS), help="comma list of UCR sets")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument("--fit", nargs="*", default=[], metavar="OPTION=VALUE",
                   help="fit options for every set, e.g. method=auto folds=3")
    p.add_argument("--out", default="bench_results/defaults", help="folder for runs and results")
    args = p.parse_args(argv)
    options = {}
    for item in args.fit:
        key, sep, value = item.partition("=")
        if not sep:
            from ..errors import ConfigError

            raise ConfigError(f"--fit {item!r}: write OPTION=VALUE, e.g. method=auto")
        options[key.replace("-", "_")] = _parse_value(value)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    rows = []
    for name in args.sets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = {**run_one(name, seed, options, out / "runs"), "options": options}
            rows.append(row)
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: test {row['test']:.4f} (transformer alone "
                  f"{row['model_alone'] if row['model_alone'] is None else round(row['model_alone'], 4)}, "
                  f"MiniRocket {row['minirocket']}) {row.get('auto_choice', '')} {row['seconds']:.0f} s",
                  flush=True)
    text = table(rows)
    print(text)
    (out / "defaults.md").write_text(text + "\n")
    return 0
