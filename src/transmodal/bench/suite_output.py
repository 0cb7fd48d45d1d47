"""The suite's files: per-data-set PNG charts, CSVs, and the table block in a README.

The tables also go into README.md between ``<!-- bench:start -->`` and ``<!-- bench:end -->``
(``write_readme_table``); the rest of the README is never touched.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transmodal.bench.suite_aggregate import COST_KEYS
from transmodal.bench.suite_tables import _fmt
from transmodal.tasks import higher_is_better

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


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
    ax.set_ylabel(f"test {metric}" + ("" if higher_is_better(metric) else " (lower is better)"))
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
