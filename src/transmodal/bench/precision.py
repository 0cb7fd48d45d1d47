"""Does bf16 autocast help on this machine? fp32 vs bf16 train steps, interleaved.

``transmodal bench precision [--body minilm] [--tokens 64] [--batch-size 16] [--repeats 7]``

Steps of the two precisions alternate so that load from other processes hits both alike;
the table gives medians and the ratio of medians. The default precision of ``fit`` on CPU
was chosen from this table (see README).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import torch
from torch.nn import functional as F

from ..models import ModelSpec, build_model


def time_steps(body: str, tokens: int, batch_size: int, repeats: int, device: str = "cpu") -> dict:
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[tokens],
                     body=body, max_tokens=tokens)
    model = build_model(spec).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randn(batch_size, 1, tokens, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(repeats + 1):  # the first round is warm-up
        for name in ("fp32", "bf16"):
            t0 = time.perf_counter()
            bare_step(model, opt, x, y, bf16=name == "bf16")
            if i > 0:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bare_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor, bf16: bool = False) -> None:
    """One plain training step (forward, cross-entropy, backward, optimizer step), nothing
    else: the reference that ``bench precision`` and ``bench speed`` time transmodal against."""
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x)  # (B, classes)
    loss = F.cross_entropy(out.float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="transmodal bench precision", description=__doc__)
    p.add_argument("--body", default="minilm")
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print(f"threads: {torch.get_num_threads()}  device: {args.device}  body: {args.body}  "
          f"batch: {args.batch_size}  (median of {args.repeats} interleaved train steps)")
    print("| tokens | fp32 s/step | bf16 s/step | bf16 speed-up |")
    print("|---:|---:|---:|---:|")
    for n in args.tokens:
        t = time_steps(args.body, n, args.batch_size, args.repeats, args.device)
        print(f"| {n} | {t['fp32']:.3f} | {t['bf16']:.3f} | {t['fp32'] / t['bf16']:.2f}x |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
