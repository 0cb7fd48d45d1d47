"""``transmodal bench predict``: prediction throughput of a run against a bare torch loop.

Issue 14 part 3. The same model (embedder + MiniLM body + head, untrained: speed does not
depend on the weights) predicts the same inputs three ways, each timed ``--repeats`` times in
one process (median reported, ratios against the bare loop of the same run):

- ``Run.predict_proba``: what a user calls (input checks, preprocessing, batches of
  ``2 x --batch-size``, softmax);
- ``predict_outputs``: transmodal's batch loop on already preprocessed inputs;
- bare loop: ``torch.inference_mode()`` and ``model(x)`` over the same batches, nothing else.

    transmodal bench predict [--n 512] [--length 150] [--batch-size 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not throughput
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(n: int, length: int, batch_size: int, body: str, repeats: int) -> list[dict[str, Any]]:
    import torch

    from ..config import FitConfig
    from ..data import Preprocessor
    from ..engine.loop import predict_outputs
    from ..engine.optim import make_accelerator
    from ..models import ModelSpec, build_model
    from ..run.run import Run
    from ..tasks import get_task

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, length)).astype(np.float32)  # (N, 1, L)
    y = np.arange(n) % 2
    task = get_task("classification")
    pre = Preprocessor.fit(x, y, task, False)
    model = build_model(ModelSpec(task="classification", n_outputs=2, in_channels=1,
                                  spatial=[length], body=body, pretrained=True, max_tokens=64))
    model.eval()
    cfg = FitConfig(body=body, batch_size=batch_size, device="cpu")
    run = Run(model, pre, cfg, {})
    accelerator, _ = make_accelerator("cpu", "fp32")
    x_pre = pre.transform_x(x)
    batch = batch_size * 2  # what Run and fit's validation use

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, n, batch):
                model(torch.from_numpy(x_pre[i: i + batch]))

    rows = []
    for name, fn in (("bare torch loop (inference_mode)", bare),
                     ("predict_outputs (transmodal's loop)",
                      lambda: predict_outputs(model, x_pre, batch, accelerator)),
                     ("Run.predict_proba (user call)", lambda: run.predict_proba(x))):
        s = _median_seconds(fn, repeats)
        rows.append({"path": name, "seconds": s, "samples_per_s": n / s})
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["vs_bare"] = r["samples_per_s"] / base
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="transmodal bench predict", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--n", type=int, default=512, help="samples to predict (default 512)")
    p.add_argument("--length", type=int, default=150, help="series length (default 150: GunPoint)")
    p.add_argument("--batch-size", type=int, default=16, help="fit's --batch-size (prediction "
                   "batches are twice it); default 16")
    p.add_argument("--body", default="minilm")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.n, args.length, args.batch_size, args.body, args.repeats)
    load = os.getloadavg()[0]
    print(f"prediction throughput: {args.n} series of length {args.length}, body {args.body}, "
          f"batches of {2 * args.batch_size}, {torch.get_num_threads()} threads, median of "
          f"{args.repeats}, load average {load:.1f}")
    print("| path | seconds | samples/s | vs bare loop |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['seconds']:.2f} | {r['samples_per_s']:.0f} | {r['vs_bare']:.2f} |")
    return 0
