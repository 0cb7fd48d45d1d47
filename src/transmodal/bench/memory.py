"""Peak memory of fit on data larger than memory: streamed from disk vs loaded whole.

``transmodal bench memory [--size-mb 4096] [--memory-mb 256] [--channels 16] [--length 8192]
[--batch-size 32] [--dir DIR] [--keep]``

Writes a synthetic two-class series set (sines vs squares with noise, float32) as a data
folder of ``.npy`` shards (``x_train/000.npy ...``, ``y_train.npy``, a small test split), fits
a tiny random BERT body on it for one epoch in a fresh process (``transmodal fit --data
FOLDER``: statistics, training, validation, test and the report stream from disk), and
reports the fit's peak resident memory (``summary.json``'s ``peak_rss_mb``, from
``getrusage``) against the file size. For comparison: the same fit on the smallest set (64
samples: what a streamed fit costs whatever the file: imports, model, per-batch buffers), a
smaller set fitted both ways, from a folder (streamed) and from an ``.npz`` (loaded whole, the
in-memory path), and the bare process (imports only). Baselines are off (``--baselines none``:
they hold their inputs in memory, see ``run/baselines.py``). Every file is deleted at the end
unless ``--keep``; disk use is about ``size-mb + memory-mb`` (x2 for the .npz copy of the
smaller set), one set at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

SHARD_MB = 128


def write_series(folder: Path, total_mb: float, channels: int, length: int, seed: int,
                 npz: bool = False, test_rows: int = 256) -> int:
    """A two-class series set of about ``total_mb`` MB of training inputs; returns the rows.
    ``npz``: one ``data.npz`` (for the in-memory path), else a shard folder."""
    row_bytes = channels * length * 4
    rows = max(64, int(total_mb * 2**20 // row_bytes))
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 8 * np.pi, length, dtype=np.float32)

    def block(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        phase = rng.uniform(0, 2 * np.pi, (n, channels, 1)).astype(np.float32)
        wave = np.sin(t + phase)  # (n, C, L)
        wave = np.where(y[:, None, None] == 1, np.sign(wave), wave)
        return (wave + 0.5 * rng.standard_normal(wave.shape, dtype=np.float32)).astype(np.float32), y

    folder.mkdir(parents=True, exist_ok=True)
    x_test, y_test = block(test_rows)
    per_shard = max(1, SHARD_MB * 2**20 // row_bytes)
    if npz:
        x, y = block(rows)
        np.savez(folder / "data.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
        return rows
    (folder / "x_train").mkdir(exist_ok=True)
    labels = []
    for i, start in enumerate(range(0, rows, per_shard)):
        x, y = block(min(per_shard, rows - start))
        np.save(folder / "x_train" / f"{i:03d}.npy", x)
        labels.append(y)
    np.save(folder / "y_train.npy", np.concatenate(labels))
    np.save(folder / "x_test.npy", x_test)
    np.save(folder / "y_test.npy", y_test)
    return rows


def tiny_body(folder: Path) -> str:
    """A tiny random BERT saved as a local model folder (no download)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    return str(folder)


def fit_process(data: str, body: str, out: Path, batch_size: int) -> dict:
    """``transmodal fit`` in a fresh process: its summary (peak RSS) and wall time."""
    cmd = [sys.executable, "-m", "transmodal.cli", "fit", "--data", data, "--body", body,
           "--epochs", "1", "--batch-size", str(batch_size), "--max-tokens", "16",
           "--baselines", "none", "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"fit failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"peak_rss_mb": summary["peak_rss_mb"], "wall_s": wall,
            "test_accuracy": summary["metrics"]["test"]["accuracy"], "n_train": summary["n_train"]}


def bare_process_mb() -> float:
    """Peak RSS of a process that only imports what fit imports (torch, transformers, ...)."""
    code = ("import sys, transmodal, transmodal.run.fit, transformers, accelerate; "
            "print(sys.modules['transmodal.run.fit'].peak_rss_mb())")  # VmHWM: see peak_rss_mb
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.strip().splitlines()[-1])


def _mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="transmodal bench memory",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=4096, help="training inputs on disk, streamed")
    p.add_argument("--memory-mb", type=float, default=256,
                   help="the smaller set fitted both ways (streamed and in memory); 0: skip")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dir", help="where to write the data (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the data and run folders")
    args = p.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="transmodal-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        body = tiny_body(root / "body")
        bare = bare_process_mb()
        plan = [("streamed (folder of .npy shards)", args.size_mb, False),
                ("streamed (folder of .npy shards)", 0, False)]  # 64 samples: the fixed cost
        if args.memory_mb > 0:
            plan += [("streamed (folder of .npy shards)", args.memory_mb, False),
                     ("in memory (.npz loaded whole)", args.memory_mb, True)]
        for i, (mode, size, npz) in enumerate(plan):
            data = root / f"data{i}"
            n = write_series(data, size, args.channels, args.length, seed=i, npz=npz)
            on_disk = _mb(data)
            result = fit_process(str(data / "data.npz") if npz else str(data), body,
                                 root / f"run{i}", args.batch_size)
            rows.append({"mode": mode, "rows": n, "disk_mb": on_disk, **result})
            shutil.rmtree(data, ignore_errors=True) if not args.keep else None
            print(f"done: {mode}, {on_disk:.0f} MB, peak RSS {result['peak_rss_mb']:.0f} MB, "
                  f"{result['wall_s']:.0f} s", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"samples ({args.channels}, {args.length}) float32, 1 epoch, batch {args.batch_size}, "
          f"tiny BERT body (16 tokens); a process that only imports fit peaks at {bare:.0f} MB")
    smallest = rows[1]["peak_rss_mb"]
    print(f"| inputs | samples | on disk MB | peak RSS MB | above the {rows[1]['rows']}-sample fit MB "
          "| RSS / disk | fit wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['rows']:,} | {r['disk_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] - smallest:.0f} | {r['peak_rss_mb'] / r['disk_mb']:.2f} | "
              f"{r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
