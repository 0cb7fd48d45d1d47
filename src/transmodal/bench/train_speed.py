"""``transmodal bench speed``: training steps against the measured matmul rate (issue 14 part 2).

In one process, on the same model (embedder + body + batch-norm pooled head, as ``fit`` builds
it) and GunPoint-like random series (length 150, two classes), rounds interleave:

- the dense fp32 matmul rate (``cost.measure_matmul_flops``): the MFU denominator;
- a bare torch training loop (``precision.bare_step``: forward, cross-entropy, backward, AdamW),
  fp32 (torch's default AdamW, and fused AdamW) and bf16 autocast, on one fixed batch;
- transmodal's refine stage itself (``RefineStage`` under ``run_stage`` with fit's callbacks:
  DataLoader, grad clipping, scheduler, validation, best-weights copy), one epoch per round,
  each step timed from one batch request to the next, a bare fp32 step after each of its steps.

The first round is warm-up. Each path reports the median s/step, the model FLOPs of a step
(``FlopCounterMode``: matmuls and attention), MFU = FLOP/s over the matmul rate, and its speed
against the bare fp32 step. ``--profile`` adds torch.profiler tables (self CPU time) of one
refine epoch and of as many bare steps.

    transmodal bench speed [--tokens 32 64] [--batch-size 16] [--threads 1] [--clock process]
                           [--fused-adamw] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..engine.callbacks import Callback
from ..engine.loop import EpochEnd, LoopState
from ..engine.refine import RefineStage

LENGTH = 150  # GunPoint's series length


class _TimedRefine(RefineStage):
    """The real refine stage, with a clock at every batch request and around validation;
    ``between`` (a bare step) runs after each of its steps, outside its clock, so that load
    from other processes hits both loops alike."""

    clock: Callable[[], float]
    between: Callable[[], None]
    step_times: list[list[float]]  # per epoch, seconds per step (batch read + training step)
    val_times: list[float]
    last_step_end: float

    def batches(self, epoch: int) -> Iterator[Any]:
        self.step_times.append([])
        t = self.clock()
        for batch in super().batches(epoch):
            yield batch
            self.step_times[-1].append(self.clock() - t)
            self.between()
            t = self.clock()
        self.last_step_end = t

    def end_epoch(self, state: LoopState, losses: list[tuple[float, int]], skipped: int) -> EpochEnd:
        t = self.clock()
        end = super().end_epoch(state, losses, skipped)
        self.val_times.append(self.clock() - t)
        return end


class _Interleave(Callback):
    """Runs last at each epoch end: notes the epoch-end cost (validation + the other
    callbacks), then runs ``work`` (matmul rate, bf16 steps) outside the refine clocks, and
    profiles the epoch after ``profile_epoch``."""

    def __init__(self, work: Callable[[int], None], profile_epoch: int | None) -> None:
        self.work, self.profile_epoch = work, profile_epoch
        self.epoch_end_times: list[float] = []
        self.profiler: Any = None
        self.refine_profile: Any = None

    def on_epoch_end(self, stage: Any, state: LoopState, end: EpochEnd) -> None:
        self.epoch_end_times.append(stage.clock() - stage.last_step_end)
        if self.profiler is not None:  # one whole refine epoch was recorded
            self.profiler.stop()
            self.refine_profile, self.profiler = self.profiler, None
            return
        self.work(state.epoch)
        if self.profile_epoch is not None and state.epoch == self.profile_epoch:
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.start()


def measure(body: str, tokens: int, batch_size: int, steps: int, rounds: int, n_val: int,
            bf16_steps: int = 2, profile: bool = False, clock: Callable[[], float] = time.perf_counter,
            length: int = LENGTH, fused_adamw: bool = False) -> dict[str, Any]:
    """Rows of the table (and profiles when asked) for one token budget; see the module doc."""
    from ..config import FitConfig
    from ..engine.callbacks import standard_callbacks
    from ..engine.loop import run_stage, start_state
    from ..engine.optim import make_accelerator
    from ..models import ModelSpec, build_model
    from ..tasks import get_task
    from .cost import measure_matmul_flops, model_flop_utilisation
    from .precision import bare_step
    from .suite_run import count_model_flops

    rng = np.random.default_rng(0)
    n_train = batch_size * steps  # full batches only: every step does the same work
    x = rng.normal(size=(n_train + n_val, 1, length)).astype(np.float32)  # (N, 1, L)
    y = np.arange(n_train + n_val) % 2
    task = get_task("classification").fit_targets(x, y)
    y_enc = task.encode(y)
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[length],
                     body=body, max_tokens=tokens, head_norm="batch")
    # one warm-up epoch, ``rounds`` timed ones, and the profiled one
    cfg = FitConfig(body=body, batch_size=batch_size, epochs=rounds + 1 + int(profile),
                    max_tokens=tokens, patience=0, device="cpu", precision="fp32",
                    fused_adamw=fused_adamw, lr=1e-4, head_lr=1e-3)  # a classification's
    accelerator, _ = make_accelerator("cpu", "fp32")
    torch.manual_seed(0)
    ours = accelerator.prepare(build_model(spec))
    bare = build_model(spec).train()  # the same weights (pretrained body, seeded head)
    n_tokens = math.prod(bare.embedder.grid)  # the tokens the body sees
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-4, weight_decay=0.01)  # torch's default
    # the optimizer's headroom: one pass per tensor (not bit-identical to the default: README)
    fused = torch.optim.AdamW(bare.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    xb = torch.from_numpy(x[:batch_size])  # (B, 1, L)
    yb = torch.from_numpy(y_enc[:batch_size])  # (B,)
    step_flops, fwd_per_sample = count_model_flops(bare, (1, length), batch_size)
    step_flops *= batch_size

    times: dict[str, list[float]] = {"matmul": [], "bare": [], "fused": [], "bf16": []}
    profiling = [False]
    epoch_of = [0]

    def bare_fp32() -> None:
        if profiling[0]:  # the profiled refine epoch runs alone
            return
        for name, optimizer in (("bare", opt), ("fused", fused)):
            t0 = clock()
            bare_step(bare, optimizer, xb, yb)
            if epoch_of[0] > 0:  # epoch 0 is warm-up
                times[name].append(clock() - t0)

    def work(epoch: int) -> None:  # after each epoch (1-based) of the refine stage
        rate = measure_matmul_flops("cpu", torch.float32, size=1024, repeats=3, clock=clock)
        bf16 = []
        for _ in range(bf16_steps):
            t0 = clock()
            bare_step(bare, opt, xb, yb, bf16=True)
            bf16.append(clock() - t0)
        if epoch > 1:
            times["matmul"].append(rate)
            times["bf16"] += bf16
        epoch_of[0] = epoch
        profiling[0] = epoch > rounds

    stage = _TimedRefine(ours, task, (x[:n_train], y_enc[:n_train]), (x[n_train:], y_enc[n_train:]),
                         y[n_train:], cfg, accelerator)
    stage.clock, stage.between = clock, bare_fp32
    stage.step_times, stage.val_times = [], []
    inter = _Interleave(work, rounds + 1 if profile else None)
    state = start_state(stage, accelerator, None)
    cbs = standard_callbacks(accelerator=accelerator, on_nan="stop", progress=False, task=task,
                             patience=0, extra=[inter])
    run_stage(stage, state, accelerator, cbs)
    bare_profile = None
    if profile:  # as many bare steps as the profiled refine epoch had
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as bare_profile:
            for _ in range(steps):
                bare_step(bare, opt, xb, yb)

    timed = slice(1, rounds + 1)
    rate = statistics.median(times["matmul"])
    ref_steps = [t for ep in stage.step_times[timed] for t in ep]
    epoch_s = [sum(ep) + e for ep, e in zip(stage.step_times[timed], inter.epoch_end_times[timed])]
    rows = [{"path": "dense matmul fp32 (1024 x 1024)", "gflops_s": rate / 1e9}]

    def row(path: str, seconds: float, flops: float) -> dict[str, Any]:
        return {"path": path, "s_step": seconds, "gflop_step": flops / 1e9,
                "gflops_s": flops / seconds / 1e9,
                "mfu": model_flop_utilisation(flops / seconds, rate)}

    rows.append(row("bare torch step fp32", statistics.median(times["bare"]), step_flops))
    rows.append(row("bare torch step fp32, fused AdamW", statistics.median(times["fused"]),
                    step_flops))
    rows.append(row("bare torch step bf16 autocast", statistics.median(times["bf16"]), step_flops))
    ours_name = "transmodal refine" + (" (--fused-adamw)" if fused_adamw else "")
    rows.append(row(f"{ours_name} step", statistics.median(ref_steps), step_flops))
    rows.append(row(f"{ours_name} epoch / {steps} steps (+ validation of {n_val}, "
                    "best copy)", statistics.median(epoch_s) / steps,
                    step_flops + n_val * fwd_per_sample / steps))
    for r in rows[1:]:  # speed against the bare fp32 step per unit of model work (= MFU ratio)
        r["vs_bare"] = r["mfu"] / rows[1]["mfu"]
    return {"rows": rows, "tokens": n_tokens, "max_tokens": tokens,
            "validation_s": statistics.median(stage.val_times[timed]),
            "epoch_end_s": statistics.median(inter.epoch_end_times[timed]),
            "refine_profile": inter.refine_profile, "bare_profile": bare_profile}


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
              "aten::convolution_backward", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def _self_ms(prof: Any, steps: int) -> dict[str, tuple[float, float]]:
    """op -> (self CPU ms per step, calls per step)."""
    return {e.key: (e.self_cpu_time_total / 1e3 / steps, e.count / steps)
            for e in prof.key_averages()}


def profile_summary(refine: Any, bare: Any, steps: int, limit: int = 12) -> str:
    """Where the refine epoch's extra time goes: per op, self CPU ms per step in the refine
    epoch (validation and callbacks included) and in as many bare steps, largest gap first;
    then the matmul-like ops' share of each."""
    ours, ref = _self_ms(refine, steps), _self_ms(bare, steps)
    lines = ["| op | refine ms/step | bare ms/step | gap ms/step | refine calls/step | bare calls/step |",
             "|---|---:|---:|---:|---:|---:|"]
    keys = sorted(set(ours) | set(ref),
                  key=lambda k: ours.get(k, (0, 0))[0] - ref.get(k, (0, 0))[0], reverse=True)
    for k in keys[:limit]:
        a, b = ours.get(k, (0.0, 0.0)), ref.get(k, (0.0, 0.0))
        lines.append(f"| {k} | {a[0]:.1f} | {b[0]:.1f} | {a[0] - b[0]:+.1f} | {a[1]:.1f} | {b[1]:.1f} |")
    for name, d in (("refine", ours), ("bare", ref)):
        total = sum(v[0] for v in d.values())
        mm = sum(d.get(k, (0.0, 0.0))[0] for k in MATMUL_OPS)
        lines.append(f"| total ({name}): {total:.1f} ms/step, matmul/attention/conv ops "
                     f"{mm:.1f} ({100 * mm / max(total, 1e-9):.0f} %) | | | | | |")
    return "\n".join(lines)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| tokens | path | s/step | GFLOP/step | GFLOP/s | MFU | vs bare fp32 |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for res in results:
        tok = f"{res['tokens']} ({res['max_tokens']})"
        for r in res["rows"]:
            if "s_step" not in r:
                lines.append(f"| {tok} | {r['path']} | | | {r['gflops_s']:.1f} | (rate) | |")
                continue
            lines.append(f"| {tok} | {r['path']} | {r['s_step']:.4f} | {r['gflop_step']:.3g} | "
                         f"{r['gflops_s']:.3g} | {100 * r['mfu']:.0f} % | {r['vs_bare']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="transmodal bench speed", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--body", default="minilm")
    p.add_argument("--tokens", type=int, nargs="+", default=[32, 64],
                   help="--max-tokens values (series of length 150: 30 and 50 tokens)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="steps per epoch and per bare round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument("--n-val", type=int, default=16, help="validation samples of the refine epoch")
    p.add_argument("--bf16-steps", type=int, default=2,
                   help="bf16 bare steps per round (slow on CPUs without bf16 units)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall time, or this process's CPU time (time.process_time: on a loaded "
                        "machine, with 1 thread, what the thread achieves while it runs)")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler tables of one refine epoch and the bare steps")
    p.add_argument("--fused-adamw", action="store_true",
                   help="the refine stage with fit's --fused-adamw")
    p.add_argument("--quick", action="store_true",
                   help="a test-sized run: a tiny random BERT, 16 tokens, batch 4, 2 steps, 1 round")
    args = p.parse_args(argv)
    from ..errors import ConfigError

    if min(args.tokens + [args.batch_size, args.steps, args.rounds, args.n_val, args.bf16_steps]) < 1:
        raise ConfigError("--tokens, --batch-size, --steps, --rounds, --n-val and --bf16-steps "
                          "must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from .memory import tiny_body

            args.body = tiny_body(Path(tmp) / "body")
            args.tokens, args.batch_size, args.steps, args.rounds, args.n_val = [16], 4, 2, 1, 4
            args.bf16_steps = 1
        clock = time.process_time if args.clock == "process" else time.perf_counter
        results = [measure(args.body, n, args.batch_size, args.steps, args.rounds, args.n_val,
                           args.bf16_steps, args.profile, clock, fused_adamw=args.fused_adamw)
                   for n in args.tokens]
    print(f"training speed: body {Path(args.body).name if args.quick else args.body}, batch "
          f"{args.batch_size}, series of length {LENGTH}, {torch.get_num_threads()} threads, "
          f"fp32 unless named; {args.clock} clock; median over {args.rounds} rounds of {args.steps} "
          f"steps, bare and refine steps alternating; load average {os.getloadavg()[0]:.1f}; tokens = used (--max-tokens)")
    print(table(results))
    for res in results:
        print(f"\n{res['tokens']} tokens: epoch end (validation of {args.n_val} + callbacks) "
              f"{res['epoch_end_s']:.3f} s, of which validation {res['validation_s']:.3f} s")
        if res["refine_profile"] is not None and res["bare_profile"] is not None:
            print(f"\nprofile (self CPU time): one refine epoch ({args.steps} steps + epoch end) "
                  f"vs {args.steps} bare fp32 steps, per step, largest gap first:")
            print(profile_summary(res["refine_profile"], res["bare_profile"], args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
