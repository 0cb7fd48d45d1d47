"""``transmodal bench multitask``: one ``--head generate`` model on several sets against one
``--head linear`` model per set, at the same total budget.

Budget: both sides run the same epochs over the same batches, so the multi-task model takes
as many optimizer steps as the single-task models together (each of its batches holds one
task's samples). Reported per set: test accuracy of the multi-task model with constrained
decoding, then of the same weights with free (unconstrained) decoding with its invalid-answer
rate, of the single-task linear model; the parameters each set adds (multi-task: its embedder;
single-task: a whole model); and the wall times. One seed: the numbers are noisy on small sets.

    transmodal bench multitask --sets GunPoint,ItalyPowerDemand --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence


def data_spec(name: str) -> str:
    """``GunPoint`` -> ``ucr:GunPoint``; a spec with a scheme or a file stays as it is."""
    return name if ":" in name or Path(name).suffix else f"ucr:{name}"


def free_scores(run: Any, name: str, x: Any, y: Any) -> dict[str, float]:
    """The multi-task model's scores on one task with unconstrained decoding (same weights)."""
    heads = run.model.heads.values()
    before = [h.decode for h in heads]
    try:
        for h in heads:
            h.decode = "free"
        return run.evaluate(x, y, task_name=name)
    finally:
        for h, mode in zip(heads, before):
            h.decode = mode


def measure(specs: list[str], options: dict[str, Any], text_body: str, out: Path) -> dict[str, Any]:
    import transmodal
    from transmodal.data import load_dataset

    t0 = time.perf_counter()
    multi = transmodal.fit(tasks=[{"data": s} for s in specs], head="generate", text_body=text_body,
                           out=out / "multitask", overwrite=True, **options)
    multi_s = time.perf_counter() - t0
    rows = []
    for spec, (name, row) in zip(specs, multi.summary["tasks"].items()):
        ds = load_dataset(spec)
        free = free_scores(multi, name, ds.x_test, ds.y_test)
        t0 = time.perf_counter()
        single = transmodal.fit(spec, head="linear", out=out / f"linear-{name}", overwrite=True,
                                **options)
        rows.append({"set": name, "multi_accuracy": row["test"]["accuracy"],
                     "multi_invalid": row["test"]["invalid_rate"],
                     "free_accuracy": free["accuracy"], "free_invalid": free["invalid_rate"],
                     "linear_accuracy": single.summary["metrics"]["test"]["accuracy"],
                     "multi_added_params": row["added_params"],
                     "linear_params": single.summary["total_params"],
                     "linear_seconds": time.perf_counter() - t0,
                     "linear_best_epoch": single.summary["best_epoch"]})
    return {"rows": rows, "multi_seconds": multi_s, "multi_params": multi.summary["total_params"],
            "multi_best_epoch": multi.summary["best_epoch"], "options": options,
            "text_body": text_body}


def table(result: dict[str, Any]) -> str:
    """Markdown: one line per set, then the totals."""
    lines = ["| set | one generate model: constrained | same, free decoding (invalid) | "
             "one linear model per set | parameters added per set: generate / linear |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['set']} | {r['multi_accuracy']:.3f} | {r['free_accuracy']:.3f} "
                     f"({r['free_invalid']:.3f}) | {r['linear_accuracy']:.3f} | "
                     f"{r['multi_added_params']:,} / {r['linear_params']:,} |")
    linear_s = sum(r["linear_seconds"] for r in result["rows"])
    linear_p = sum(r["linear_params"] for r in result["rows"])
    lines.append(f"| all: wall time, parameters | {result['multi_seconds']:.0f} s, "
                 f"{result['multi_params']:,} | | {linear_s:.0f} s, {linear_p:,} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="transmodal bench multitask", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--sets", default="GunPoint,ItalyPowerDemand",
                   help="comma list of UCR names or data specs (default GunPoint,ItalyPowerDemand)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of every fit (default 10)")
    p.add_argument("--body", default="minilm")
    p.add_argument("--text-body", default="minilm", help="the generate head's decoder warm start")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_results/multitask", help="run folders and results.json")
    args = p.parse_args(list(argv or []))
    specs = [data_spec(s.strip()) for s in args.sets.split(",") if s.strip()]
    if len(specs) < 2:
        from transmodal.errors import ConfigError

        raise ConfigError("--sets: give at least two sets, e.g. GunPoint,ItalyPowerDemand")
    options = {"epochs": args.epochs, "body": args.body, "batch_size": args.batch_size,
               "max_tokens": args.max_tokens, "seed": args.seed, "progress": False,
               "baselines": "none"}
    out = Path(args.out)
    result = measure(specs, options, args.text_body, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"results: {out / 'results.json'}")
    return 0
