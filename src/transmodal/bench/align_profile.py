"""Where the OTDD align loss spends its time, and the floor that the machine sets.

One forward+backward of the debiased OTDD (after one warm-up call), split into phases by
timing the library's own functions (wrapped in this process only): the label term forward
(class-to-class Bures distances), its backward (the hand-written eigen backwards), the
Sinkhorn solves including the cost fills, the plan cost, and the rest (gradient aggregates,
class statistics, autograd). It also counts the D x D eigenproblems and the FLOPs of the large
``torch.mm`` products (cost fills and plan aggregates), measures this machine's rate for both
in the same process, and prints the floor they imply: the time those products and
eigenproblems alone need at the measured rates, with every other part free. A target below
the floor cannot be met without changing what is computed.

Used by ``transmodal bench align --profile``; ``profile_cell`` runs in a fresh subprocess
(see :mod:`transmodal.bench.align_speed`).
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, TextIO

_EIG_REPEATS = 2
_MM_REPEATS = 3


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _rates(n: int, m: int, dim: int) -> dict[str, float]:
    """Measured rates: float32 GEMM GFLOP/s at the cost-fill shape, float64 GEMM GFLOP/s at
    a label-term shape, seconds per D x D eigendecomposition (float64 with vectors, float64
    and float32 values only)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, dim + 12, generator=g)
    b = torch.randn(m, dim + 12, generator=g)
    out = torch.empty(n, m)
    mm_s = _best(lambda: torch.mm(a, b.T, out=out), _MM_REPEATS)
    p = torch.randn(1024, dim, generator=g, dtype=torch.float64)
    q = torch.randn(dim, 8 * dim, generator=g, dtype=torch.float64)
    mm64_s = _best(lambda: p @ q, _MM_REPEATS)
    z = torch.randn(4, dim, dim, generator=g, dtype=torch.float64)
    s64 = z @ z.mT / dim  # (4, D, D) PSD
    s32 = s64.float()
    return {"gemm_gflops": 2.0 * n * m * (dim + 12) / mm_s / 1e9,
            "gemm64_gflops": 2.0 * 1024 * dim * 8 * dim / mm64_s / 1e9,
            "eigh_f64_s": _best(lambda: torch.linalg.eigh(s64), _EIG_REPEATS) / 4,
            "eigvalsh_f64_s": _best(lambda: torch.linalg.eigvalsh(s64), _EIG_REPEATS) / 4,
            "eigvalsh_f32_s": _best(lambda: torch.linalg.eigvalsh(s32), _EIG_REPEATS) / 4}


class _Recorder:
    """Wraps library functions in place to time and count them; :meth:`restore` undoes it."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.saved: list[tuple[Any, str, Any]] = []
        self.phases: dict[str, float] = defaultdict(float)
        self.eig: dict[str, int] = defaultdict(int)  # D x D eigenproblems by kind
        self.mm_flops = 0.0
        self.label_flops = 0.0  # float64 products inside the label term's forward
        self.iters: list[int] = []
        self.on = False

    def _swap(self, owner: Any, name: str, new: Any) -> None:
        self.saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)

    def restore(self) -> None:
        for owner, name, old in reversed(self.saved):
            setattr(owner, name, old)
        self.saved.clear()

    def time(self, owner: Any, name: str, phase: str) -> None:
        fn = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phases[phase] += time.perf_counter() - t0

        self._swap(owner, name, staticmethod(wrapped) if isinstance(owner, type) else wrapped)

    def count_eig(self, owner: Any, name: str, vectors: bool) -> None:
        fn = getattr(owner, name)

        def wrapped(g: Any) -> Any:
            if self.on and g.shape[-1] == self.dim:
                kind = f"{'eigh' if vectors else 'eigvalsh'}_{str(g.dtype).split('.')[-1]}"
                self.eig[kind] += int(g.numel() // (self.dim * self.dim))
            return fn(g)

        self._swap(owner, name, wrapped)

    def count_label_products(self, label: Any) -> None:
        """FLOPs of the D-sized products in the label term's two batched forwards."""
        covcov, covpoints = label._CovCovTraces.forward, label._CovPointsTrace.forward

        def cc(ctx: Any, r: Any, t: Any, ks: list, ls: list, dtype: Any) -> Any:
            if self.on:
                self.label_flops += len(ks) * 4.0 * self.dim ** 3  # R_k T_l R_k per pair
            return covcov(ctx, r, t, ks, ls, dtype)

        def cp(ctx: Any, covs: Any, pb: Any) -> Any:
            if self.on:
                (k, d, _), (b, n, _) = covs.shape, pb.shape
                self.label_flops += 2.0 * b * n * d * k * d + 2.0 * b * n * k * d * n  # Q, G
            return covpoints(ctx, covs, pb)

        self._swap(label._CovCovTraces, "forward", staticmethod(cc))
        self._swap(label._CovPointsTrace, "forward", staticmethod(cp))

    def count_mm(self, torch: Any) -> None:
        fn = torch.mm

        def wrapped(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.mm_flops += 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
            return fn(a, b, *args, **kwargs)

        self._swap(torch, "mm", wrapped)


def _profiled_call(rec: _Recorder, spec: dict[str, Any], n: int, m: int, dim: int,
                   k: int) -> tuple[float, float]:
    """Instrument the library, run a warm-up call and one recorded call: (fwd s, bwd s)."""
    import torch

    from transmodal.align import _label, _otdd, _sqrtm
    from transmodal.align.distances import OTDDSource

    from .align_speed import make_data

    rec.time(_otdd, "_gaussian_w2", "label term, forward")
    for cls in (_label._CovCovTraces, _label._CovPointsTrace, _sqrtm._TraceSqrtPSD,
                _sqrtm._SqrtmPSD):
        rec.time(cls, "backward", "label term, backward")
    rec.time(_otdd, "_plan_cost", "plan cost (no-gradient terms)")
    sinkhorn = _otdd._sinkhorn

    def solve(*args: Any, **kwargs: Any) -> Any:
        plan = sinkhorn(*args, **kwargs)
        if rec.on:
            rec.iters.append(plan.n_iter)
        return plan

    rec._swap(_otdd, "_sinkhorn", solve)
    rec.time(_otdd, "_sinkhorn", "Sinkhorn incl. cost fills")
    for owner in (_label, _sqrtm):
        rec.count_eig(owner, "_eigh", vectors=True)
        rec.count_eig(owner, "_eigvalsh", vectors=False)
    rec.count_mm(torch)
    rec.count_label_products(_label)

    data = [make_data(n, m, dim, k, spec["seed"], batch=i) for i in range(2)]
    xs, ys = data[0][0], data[0][1]
    src = OTDDSource(xs, ys, reg=spec["reg"]) if spec.get("cached_source") else None

    def call(xt: Any, yt: Any) -> tuple[float, float]:
        x = xt.clone().requires_grad_(True)
        t0 = time.perf_counter()
        if src is not None:
            value = src.distance(x, yt)
        else:
            value = _otdd.otdd(xs, ys, x, yt, reg=spec["reg"])
        t1 = time.perf_counter()
        value.backward()
        return t1 - t0, time.perf_counter() - t1

    call(*data[1][2:])  # warm-up (a different target batch)
    rec.on = True
    try:
        return call(*data[0][2:])
    finally:
        rec.on = False


def profile_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Phases of one debiased OTDD forward+backward, counts, rates and the floor."""
    import os

    import torch

    threads = torch.get_num_threads()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    n, m, dim, k = spec["n"], spec["m"], spec["dim"], spec["n_classes"]
    rec = _Recorder(dim)
    try:
        fwd, bwd = _profiled_call(rec, spec, n, m, dim, k)
        rates = _rates(n, m, dim)
        used = torch.get_num_threads()
    finally:
        rec.restore()
        torch.set_num_threads(threads)
    t_eig = {"eigh_float64": rates["eigh_f64_s"], "eigvalsh_float64": rates["eigvalsh_f64_s"],
             "eigvalsh_float32": rates["eigvalsh_f32_s"]}
    floor_mm = (rec.mm_flops / (rates["gemm_gflops"] * 1e9)
                + rec.label_flops / (rates["gemm64_gflops"] * 1e9))
    floor_eig = sum(count * t_eig.get(kind, rates["eigh_f64_s"]) for kind, count in rec.eig.items())
    return {"fwd_s": fwd, "bwd_s": bwd, "phases": dict(rec.phases), "eig": dict(rec.eig),
            "mm_gflop": rec.mm_flops / 1e9, "label_gflop": rec.label_flops / 1e9,
            "iters": rec.iters, "rates": rates,
            "floor_mm_s": floor_mm, "floor_eig_s": floor_eig,
            "load": round(os.getloadavg()[0], 1), "threads": used}


def print_profile(title: str, r: dict[str, Any], file: TextIO) -> None:
    """Markdown: the phases of the call, then the floor and the rates it comes from."""
    print(f"\n{title}\n", file=file)
    if "error" in r:
        print(f"not measured: {r['error']}", file=file)
        return
    total = r["fwd_s"] + r["bwd_s"]
    print("| phase | s | share |", file=file)
    print("|---|---|---|", file=file)
    rest = total
    for phase, s in sorted(r["phases"].items(), key=lambda kv: -kv[1]):
        print(f"| {phase} | {s:.3f} | {100 * s / total:.0f}% |", file=file)
        rest -= s
    print(f"| rest (gradient aggregates, class statistics, autograd) | {rest:.3f} | "
          f"{100 * rest / total:.0f}% |", file=file)
    print(f"| **total** (forward {r['fwd_s']:.3f} + backward {r['bwd_s']:.3f}) | **{total:.3f}** "
          "| 100% |", file=file)
    rates = r["rates"]
    eig = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(r["eig"].items())) or "none"
    print(f"\nSinkhorn iterations per solve: {r['iters']}. D x D eigenproblems: {eig}. "
          f"Large matrix products: {r['mm_gflop']:.1f} GFLOP float32 (cost fills, plan "
          f"aggregates), {r['label_gflop']:.1f} GFLOP float64 (label-term forward).",
          file=file)
    print(f"Measured here, same process: GEMM {rates['gemm_gflops']:.1f} GFLOP/s float32, "
          f"{rates['gemm64_gflops']:.1f} float64; "
          f"per D x D eigenproblem {1e3 * rates['eigh_f64_s']:.1f} ms (float64, vectors), "
          f"{1e3 * rates['eigvalsh_f64_s']:.1f} ms (float64, values), "
          f"{1e3 * rates['eigvalsh_f32_s']:.1f} ms (float32, values). "
          f"Floor at these rates: products {r['floor_mm_s']:.3f} s + eigenproblems "
          f"{r['floor_eig_s']:.3f} s = **{r['floor_mm_s'] + r['floor_eig_s']:.3f} s** "
          f"(everything else free); load {r['load']}, {r['threads']} thread(s).", file=file)
