"""Transfer strategies side by side: every ``--tune`` value on the same data and budget.

For each dataset and each ``--tune`` value (``--align none``): the test score on the task's
primary metric (accuracy for classes, RMSE for values), training time (the refine stage,
per-epoch validation included) and trainable parameters, as a markdown table; mean +- standard
deviation over ``--seeds`` when there are several.

Datasets (``--datasets``):

- ``ucr:GunPoint``, ``ucr:ArrowHead``, ``ucr:ItalyPowerDemand``: the published train/test
  splits bundled in aeon, cross-modal through the MiniLM body (``--body`` for another);
- ``digits:cnn``: scikit-learn's digits as 8x8 grey images through the ImageNet CNN
  (EfficientNet-Lite0, in-modality transfer; images resized to ``--image-size``);
- ``digits:minilm``: the same images cross-modally through MiniLM (2-D patch embedder,
  1x1 patches = 64 tokens);
- your own data: any data spec ``fit`` reads that holds a test split (an ``.npz`` with
  ``x_test``/``y_test``, ``ucr:NAME``), scored on the task's primary metric. ``--tunes
  full,scratch --epochs 60`` asks whether the pretrained body earned its cost on it: the same
  model with a randomly initialised body, at fit's default epochs.

Digits split (fixed, documented, identical for every strategy and seed): stratified,
``train_test_split(train_size=500, stratify=y, random_state=0)`` on all 1,797 images, i.e.
500 training images (48-51 per class; fit then holds out its own validation share, 100) and
1,297 test images. 500 rather than the whole set keeps a CNN epoch near 10 s on the shared
CPU, and 50 images per class is also the regime where the choice of strategy matters.

Seeds change the validation split, the new layers' initialisation and the batch order; the
test split never changes. Timings are wall-clock on whatever else runs on the machine: compare
them within one table, not across machines. ``--threads`` sets torch's thread count (1 was
steadier and faster than 2 on the busy 2-core machine).

Usage: ``transmodal bench tune [--datasets ...] [--tunes ...] [--epochs N] [--seeds 0 1]
[--quick] [--jsonl results.jsonl]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Sequence

from ..errors import DataError

DATASETS = ("ucr:GunPoint", "ucr:ArrowHead", "ucr:ItalyPowerDemand", "digits:cnn", "digits:minilm")
TUNES = ("scratch", "frozen", "layernorm", "hybrid:3", "full", "lora")
DIGITS_TRAIN = 500
DIGITS_SEED = 0
CNN_BODY = "efficientnet-lite0"


def digits_split() -> dict[str, Any]:
    """scikit-learn digits as (N, 1, 8, 8) float32 images, the fixed stratified split above."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 1, 8, 8).astype(np.float32)  # pixel values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=DIGITS_TRAIN, stratify=y,
                                              random_state=DIGITS_SEED)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def dataset_options(name: str, body: str, image_size: int | None) -> tuple[Any, dict[str, Any]]:
    """(data for fit, options for fit) of one benchmark dataset: the digits rows, or any data
    spec fit reads (``ucr:NAME``, a file)."""
    if name == "digits:cnn":
        return digits_split(), {"body": CNN_BODY, "image_size": image_size}
    if name == "digits:minilm":
        return digits_split(), {"body": body}
    return name, {"body": body}


def check_dataset(name: str) -> None:
    """Before any fit: one clear error for a spec fit cannot read, or data without a test split
    (every strategy is scored on it)."""
    if name.startswith("digits:"):
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}; the digits rows are digits:cnn and "
                            "digits:minilm")
        return
    from transmodal.data import load_dataset

    if load_dataset(name).x_test is None:
        raise DataError(f"{name} has no test split, and bench tune scores every strategy on "
                        "one; put x_test and y_test in the .npz")


def run_cell(dataset: str, tune: str, seed: int, epochs: int, body: str,
             image_size: int | None, batch_size: int) -> dict[str, Any]:
    import transmodal
    from transmodal.tasks import get_task

    data, options = dataset_options(dataset, body, image_size)
    t0 = time.perf_counter()
    try:
        run = transmodal.fit(data, tune=tune, seed=seed, epochs=epochs, batch_size=batch_size,
                             progress=False, baselines="none", **options)  # timed: fit only
    except transmodal.TransmodalError as e:
        return {"dataset": dataset, "tune": tune, "seed": seed, "error": str(e)}
    s = run.summary
    metric = get_task(s["task"]).primary[0]
    return {"dataset": dataset, "body": options["body"], "tune": tune, "seed": seed,
            "metric": metric, "score": s["metrics"]["test"][metric],
            "val_score": s["metrics"]["val"][metric],
            "train_s": s["times"]["refine"], "total_s": time.perf_counter() - t0,
            "trainable": s["trainable_params"], "total": s["total_params"],
            "best_epoch": s["best_epoch"], "epochs_run": s["epochs_run"]}


def _mean_sd(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table: one row per (dataset, tune), seeds aggregated."""
    metrics = {r["metric"] for r in results if "error" not in r}
    score = f"test {metrics.pop()}" if len(metrics) == 1 else "test score (metric)"
    rows = [f"| dataset | body | tune | {score} | train s | trainable params | best epoch |",
            "|---|---|---|---|---|---|---|"]
    keys: list[tuple[str, str]] = []
    for r in results:
        if (r["dataset"], r["tune"]) not in keys:
            keys.append((r["dataset"], r["tune"]))
    for dataset, tune in keys:
        cell = [r for r in results if r["dataset"] == dataset and r["tune"] == tune]
        ok = [r for r in cell if "error" not in r]
        if not ok:
            rows.append(f"| {dataset} | | {tune} | error: {cell[0]['error']} | | | |")
            continue
        acc = _mean_sd([r["score"] for r in ok], 3)
        if score == "test score (metric)":
            acc += f" ({ok[0]['metric']})"
        secs = _mean_sd([r["train_s"] for r in ok], 0)
        best = "/".join(f"{r['best_epoch']}" for r in ok) + f" of {ok[0]['epochs_run']}"
        rows.append(f"| {dataset} | {ok[0]['body']} | {tune} | {acc} | {secs} | "
                    f"{_params(ok[0]['trainable'])} of {_params(ok[0]['total'])} | {best} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="transmodal bench tune", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS),
                   help=f"comma-separated (default: {','.join(DATASETS)}); or any data spec "
                        "fit reads that holds a test split (ucr:NAME, an .npz with x_test)")
    p.add_argument("--tunes", default=",".join(TUNES), help=f"comma-separated (default: {','.join(TUNES)})")
    p.add_argument("--epochs", type=int, default=40, help="refine epochs (default 40; --quick: 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument("--body", default="minilm", help="transformer body of the cross-modal rows")
    p.add_argument("--image-size", type=int, default=None, help="digits:cnn image side (default 64)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--jsonl", default=None, help="also append one JSON line per run to this file")
    p.add_argument("--quick", action="store_true", help="5 epochs, seed 0: a smoke run of the table")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 5, [0]
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    tunes = [t.strip() for t in args.tunes.split(",") if t.strip()]
    from transmodal.config import parse_tune

    for t in tunes:
        parse_tune(t)  # a typo fails now, not after an hour of the other cells
    for d in datasets:
        check_dataset(d)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    results = []
    n = len(datasets) * len(tunes) * len(args.seeds)
    print(f"bench tune: {n} runs, {args.epochs} epochs each, seeds {args.seeds}", file=sys.stderr)
    for dataset in datasets:
        for tune in tunes:
            for seed in args.seeds:
                r = run_cell(dataset, tune, seed, args.epochs, args.body, args.image_size, args.batch_size)
                results.append(r)
                shown = r.get("error") or f"{r['metric']} {r['score']:.3f}  {r['train_s']:.0f} s"
                print(f"  {dataset} {tune} seed {seed}: {shown}", file=sys.stderr, flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
