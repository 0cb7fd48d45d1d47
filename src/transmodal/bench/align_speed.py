"""Speed of the OTDD align loss: transmodal's implementation against a POT reference.

Prints markdown tables: for N = M labelled points in D dimensions, the median wall time of
the debiased OTDD (Gaussian label term) forward and forward+backward, ours against a POT
reference at the same eps, iteration cap and tolerance, the relative value difference, and
the peak memory of each; then the align stage's "repeated call" scenario (a fresh target
batch of 512 points against 5,000 cached source points) with and without
:class:`~transmodal.align.OTDDSource`.

POT reference (what a careful user of POT writes): ``ot.dist`` for the squared distances,
plus the label term by the textbook Gaussian formula (class means and covariances, covariance
square roots and eigenvalues of S1^1/2 S2 S1^1/2 by ``torch.linalg``, recomputed each call),
plus ``ot.sinkhorn2`` (POT's default scaling Sinkhorn) on torch tensors, whose gradient is
autograd through the iterations; the debiased loss is three ``sinkhorn2`` calls. It stands in
for the reference OTDD library (microsoft/otdd), which is not installable here (not on PyPI).

Exact POT (:func:`pot_exact`, the accuracy check): our definition, i.e. the same
label-augmented cost, solved by POT's Sinkhorn in float64 to an L1 marginal error of 1e-6
(ours: 1e-4), value only. "rel. diff vs exact" is ours against it; "POT/ours" is the speed-up.
``--profile`` adds where one call spends its time and the floor the machine sets
(:mod:`transmodal.bench.align_profile`).

Memory: every cell runs in a fresh subprocess which reports ``ru_maxrss`` (its lifetime peak
resident set) after the runs minus the same figure just before the first one (after imports
and data generation), i.e. the extra peak the computation needed. ``tracemalloc`` does not
see torch's allocations, and one process for all cells would only show the largest.

Usage: ``python -m transmodal.bench.align_speed [--sizes 1000 5000] [--dim 384] [--repeats 3]
[--quick]`` (also ``transmodal bench align ...``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Sequence, TextIO

REPEATED_SOURCE = 5000
REPEATED_TARGET = 512
DEFAULT_CLASSES = 10
CELL_TIMEOUT_S = 900  # one subprocess (all repeats of one cell)
MEM_LIMIT_GB = 12.0  # address-space cap per cell subprocess (the machine has 23 GB, shared)
WARMUP_MAX_SIZE = 5000  # above this, one untimed warm-up run costs minutes and changes nothing


# ------------------------------------------------------------------------------ data


def make_data(n: int, m: int, dim: int, n_classes: int, seed: int, batch: int = 0):
    """Synthetic labelled source and target features, float32.

    Features mimic embeddings: class means plus noise with a low-rank (32-d) structure
    plus isotropic noise, so class covariances are anisotropic and, for classes with fewer
    points than dimensions, singular. The target has other class means, scale and offset.
    ``batch`` draws a different target batch from the same target distribution.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    rank = min(32, dim)
    basis_s = torch.randn(dim, rank, generator=g) / math.sqrt(rank)
    basis_t = torch.randn(dim, rank, generator=g) / math.sqrt(rank)
    means_s = torch.randn(n_classes, dim, generator=g) * 0.6
    means_t = torch.randn(n_classes, dim, generator=g) * 0.6 + 0.2

    def sample(count: int, means, basis, scale: float, gen):
        y = torch.randint(0, n_classes, (count,), generator=gen)
        z = torch.randn(count, rank, generator=gen) @ basis.T + 0.5 * torch.randn(count, dim, generator=gen)
        return means[y] + scale * z, y

    xs, ys = sample(n, means_s, basis_s, 1.0, g)
    gt = torch.Generator().manual_seed(seed * 1000 + 17 + batch)
    xt, yt = sample(m, means_t, basis_t, 1.3, gt)
    return xs.float(), ys, xt.float(), yt


# ------------------------------------------------------------------- POT reference


def _reference_label_term(xs, ys, xt, yt, debiased: bool):
    """Textbook Gaussian W2 between classes, recomputed from scratch (float64).

    W = ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 sum sqrt(eig(S1^1/2 S2 S1^1/2)); the source
    square roots by eigh (no gradient needed), the pair eigenvalues by eigvalsh (whose
    backward needs no eigenvalue gaps). Returns W_st and, if debiased, W_ss and W_tt.
    The eigendecompositions run on one thread, as ours do: MKL's threaded eigh spin-waits
    and is 10-100x slower on a loaded 2-core machine, which would flatter us unfairly.
    """
    import torch

    def stats(x, y):
        x = x.double()
        ks = torch.unique(y)
        means = torch.stack([x[y == k].mean(0) for k in ks])
        covs = torch.stack([torch.cov(x[y == k].T, correction=0) if int((y == k).sum()) > 1
                            else torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype) for k in ks])
        return means, covs

    from transmodal.align.distances import _one_thread

    def sqrtm(s):
        with _one_thread(s):
            lam, vec = torch.linalg.eigh(s)
        return (vec * lam.clamp_min(0).sqrt()[..., None, :]) @ vec.mT

    def w2(m1, s1, m2, s2):
        r1 = sqrtm(s1.detach()) if not s1.requires_grad else sqrtm(s1)
        prod = r1[:, None] @ s2[None, :] @ r1[:, None]  # (K1, K2, D, D)
        with _one_thread(prod):
            cross = torch.linalg.eigvalsh(prod).clamp_min(0).sqrt().sum(-1)
        tr1 = s1.diagonal(dim1=-2, dim2=-1).sum(-1)
        tr2 = s2.diagonal(dim1=-2, dim2=-1).sum(-1)
        mean_sq = (m1[:, None] - m2[None]).pow(2).sum(-1)
        return (mean_sq + tr1[:, None] + tr2[None] - 2 * cross).clamp_min(0)

    ms, ss = stats(xs, ys)
    mt, st = stats(xt, yt)
    out = {"st": w2(ms, ss, mt, st)}
    if debiased:
        out["ss"] = w2(ms, ss, ms, ss)
        out["tt"] = w2(mt, st.detach(), mt, st)  # gradient through one side, as the ss/st terms
        # exact zeros on the diagonal (the formula leaves rounding there)
        for key in ("ss", "tt"):
            out[key] = out[key] * (1 - torch.eye(out[key].shape[0], dtype=out[key].dtype))
    return out


def pot_reference(xs, ys, xt, yt, eps: float, max_iter: int, tol: float, debiased: bool = True,
                  label: bool = True, method: str = "sinkhorn"):
    """Debiased OTDD with ``ot.dist`` + textbook label term + ``ot.sinkhorn2`` (torch backend).

    POT stops on the L2 norm of the column-marginal violation; ``tol / sqrt(M)`` makes that
    at least as strict as our L1 criterion ``tol``.
    """
    import ot
    import torch

    _, ys_i = torch.unique(ys, return_inverse=True)
    _, yt_i = torch.unique(yt, return_inverse=True)
    w = _reference_label_term(xs, ys, xt, yt, debiased) if label else {}

    def term(x1, y1, x2, y2, wl):
        c = ot.dist(x1, x2)
        if wl is not None:
            c = c + wl.to(x1.dtype)[y1][:, y2]
        a = torch.full((x1.shape[0],), 1.0 / x1.shape[0], dtype=x1.dtype)
        b = torch.full((x2.shape[0],), 1.0 / x2.shape[0], dtype=x1.dtype)
        return ot.sinkhorn2(a, b, c, eps, method=method, numItermax=max_iter,
                            stopThr=tol / math.sqrt(x2.shape[0]))

    value = term(xs, ys_i, xt, yt_i, w.get("st"))
    if debiased:
        value = (value - 0.5 * term(xs, ys_i, xs, ys_i, w.get("ss"))
                 - 0.5 * term(xt, yt_i, xt, yt_i, w.get("tt")))
    return value


EXACT_TOL = 1e-6  # L1 marginal error of the exact reference: 100x below ours (1e-4)
EXACT_MAX_ITER = 10_000


def pot_exact(xs, ys, xt, yt, eps: float, debiased: bool = True, label: bool = True):
    """The accuracy reference: our OTDD definition solved by POT to convergence, float64.

    The same label-augmented cost as ours (``ot.dist`` + our Bures label distances
    :func:`~transmodal.align.distances.label_distances`, both from float64 features), then
    ``ot.sinkhorn2`` (POT's plain scaling Sinkhorn, in float64) to an L1 marginal error below
    ``EXACT_TOL`` (POT checks the L2 norm; ``EXACT_TOL / sqrt(M)`` there bounds the L1 one):
    what is left of the difference from ours is our solver's and float32's error, not a
    different definition. Value only (no gradient); the transport cost <P, C>, as ours with
    ``objective="cost"``. Plain scaling in float64 is exact while C / eps spans less than
    ~700 (the benchmark's lies in 0-68; POT warns otherwise, shown in the notes); the log
    domain took over 900 s at 5,000 x 5,000 on the loaded 2-core machine (measured).
    """
    import ot
    import torch

    from transmodal.align.distances import label_distances

    xs64, xt64 = xs.double(), xt.double()
    _, ys_i = torch.unique(ys, return_inverse=True)
    _, yt_i = torch.unique(yt, return_inverse=True)
    w: dict[str, Any] = {}
    if label:
        w["st"] = label_distances(xs64, ys, xt64, yt).detach()
        if debiased:
            w["ss"] = label_distances(xs64, ys).detach()
            w["tt"] = label_distances(xt64, yt).detach()

    def term(x1, y1, x2, y2, wl):
        c = ot.dist(x1, x2)  # (N1, N2) float64
        if wl is not None:
            c = c + wl[y1][:, y2]
        a = torch.full((x1.shape[0],), 1.0 / x1.shape[0], dtype=torch.float64)
        b = torch.full((x2.shape[0],), 1.0 / x2.shape[0], dtype=torch.float64)
        return ot.sinkhorn2(a, b, c, eps, method="sinkhorn", numItermax=EXACT_MAX_ITER,
                            stopThr=EXACT_TOL / math.sqrt(x2.shape[0]))

    with torch.no_grad():
        value = term(xs64, ys_i, xt64, yt_i, w.get("st"))
        if debiased:
            value = (value - 0.5 * term(xs64, ys_i, xs64, ys_i, w.get("ss"))
                     - 0.5 * term(xt64, yt_i, xt64, yt_i, w.get("tt")))
    return value


# ------------------------------------------------------------------------- one cell


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in this process (under the memory cap); returns times, values, memory."""
    limit_gb = spec.get("mem_limit_gb")
    if limit_gb:
        # An address-space cap makes a run that needs too much fail cleanly in its own process
        # instead of pushing a shared machine into the OOM killer.
        cap = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        if spec["impl"] == "profile":
            from .align_profile import profile_cell

            return profile_cell(spec)
        return _cell(spec)
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, MemoryError) or "allocat" in str(err):
            return {"error": f"out of memory under the {limit_gb:g} GB cap (--mem-limit-gb)"}
        raise


def _cell(spec: dict[str, Any]) -> dict[str, Any]:
    import ot  # noqa: F401  (imported before the memory baseline, for both implementations)
    import torch

    from transmodal.align.distances import DEFAULT_MAX_ITER, DEFAULT_TOL, OTDDSource, otdd

    torch.manual_seed(0)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    label, debiased = spec.get("label", True), spec.get("debiased", True)
    n, m, dim, k = spec["n"], spec["m"], spec["dim"], spec["n_classes"]
    impl, backward, repeats = spec["impl"], spec["backward"], spec["repeats"]
    warmup = int(spec.get("warmup", True))
    batches = [make_data(n, m, dim, k, spec["seed"], batch=i if spec["new_batches"] else 0)
               for i in range(repeats + warmup)]
    xs, ys = batches[0][0], batches[0][1]
    src_build_s = None
    src = None
    eps = spec["reg"] * float(2.0 * xs.double().var(0, unbiased=False).sum())
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if impl == "ours_source":
        t0 = time.perf_counter()
        src = OTDDSource(xs, ys, reg=spec["reg"], label_cost=label, debiased=debiased)
        src_build_s = time.perf_counter() - t0
    times, values, notes = [], [], set()
    for i, (_, _, xt0, yt) in enumerate(batches):
        xt = xt0.clone().requires_grad_(backward)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            if impl == "ours":
                val = otdd(xs, ys, xt, yt, reg=spec["reg"], label_cost=label, debiased=debiased)
            elif impl == "ours_source":
                val = otdd(None, None, xt, yt, source=src)
            elif impl == "exact":
                val = pot_exact(xs, ys, xt0, yt, eps, debiased=debiased, label=label)
            else:
                val = pot_reference(xs, ys, xt, yt, eps, DEFAULT_MAX_ITER, DEFAULT_TOL,
                                    debiased=debiased, label=label)
            if backward and impl != "exact":  # the exact reference is a value only
                val.backward()
                grad_ok = bool(torch.isfinite(xt.grad).all())
                if not grad_ok:
                    notes.add("non-finite gradient")
            elapsed = time.perf_counter() - t0
        for w in caught:
            notes.add(str(w.message).split("\n")[0][:80])
        if i >= warmup:  # the first run warms up threads and the allocator
            times.append(elapsed)
            values.append(float(val.detach()))
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024.0  # KiB on Linux
    return {"times": times, "values": values, "peak_mb": peak_mb, "notes": sorted(notes),
            "source_build_s": src_build_s, "threads": torch.get_num_threads(),
            "load": round(os.getloadavg()[0], 1)}


def _run_cell(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One cell in a fresh interpreter (clean peak-memory figure); errors become a reason."""
    cmd = [sys.executable, "-m", "transmodal.bench.align_speed", "--_worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"took over {timeout:.0f} s"}
    if proc.returncode != 0:
        if proc.returncode in (-9, 137):
            return {"error": "killed (out of memory)"}
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed: {tail[:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- run


def _median(r: dict[str, Any]) -> float | None:
    return statistics.median(r["times"]) if r.get("times") else None


def _fmt_s(r: dict[str, Any]) -> str:
    t = _median(r)
    return "—" if t is None else f"{t:.3f}"


def _fmt_mb(r: dict[str, Any]) -> str:
    return f"{r['peak_mb']:.0f}" if "peak_mb" in r else "—"


def _rel_diff(ours: dict[str, Any], ref: dict[str, Any]) -> str:
    if not ours.get("values") or not ref.get("values"):
        return "—"
    diffs = [abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours["values"], ref["values"])]
    return f"{max(diffs):.1e}"


def _notes(*named: tuple[str, dict[str, Any]]) -> str:
    out = []
    for who, r in named:
        if "error" in r:
            out.append(f"{who}: {r['error']}")
        out += [f"{who}: {note}" for note in r.get("notes", [])]
    return "; ".join(out)


def _load(*rs: dict[str, Any]) -> str:
    loads = [r["load"] for r in rs if "load" in r]
    return "/".join(f"{x:.1f}" for x in loads) or "—"


def _speedup(ours: dict[str, Any], ref: dict[str, Any]) -> str:
    a, b = _median(ours), _median(ref)
    return "—" if a is None or b is None else f"{b / a:.2f}"


def _table(title: str, sizes: Sequence[int], passes: Sequence[bool], base: dict[str, Any],
           timeout: float, pot_max_size: int | None, file: TextIO) -> list[dict[str, Any]]:
    print(f"\n{title}\n", file=file)
    print("| N=M | D | pass | ours (s) | POT (s) | POT/ours | exact POT (s) | rel. diff vs POT "
          "| rel. diff vs exact | peak MB ours | peak MB POT | peak MB exact | load ours/POT/exact "
          "| notes |", file=file)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", file=file, flush=True)
    rows = []
    for size in sizes:
        exact: dict[str, Any] | None = None
        for backward in passes:
            spec = {**base, "n": size, "m": size, "backward": backward, "new_batches": False,
                    "warmup": size <= WARMUP_MAX_SIZE}
            ours = _run_cell({**spec, "impl": "ours"}, timeout)
            if pot_max_size is not None and size > pot_max_size:
                skipped = {"error": f"not run above N={pot_max_size} (--pot-max-size)"}
                ref, exact = skipped, skipped
            else:
                ref = _run_cell({**spec, "impl": "pot"}, timeout)
                if exact is None:  # one value per size: the same data in both passes
                    exact = _run_cell({**spec, "impl": "exact", "backward": False, "repeats": 1,
                                       "warmup": False}, timeout)
            pass_ = "fwd+bwd" if backward else "fwd"
            line = (f"| {size} | {base['dim']} | {pass_} | {_fmt_s(ours)} | {_fmt_s(ref)} | "
                    f"{_speedup(ours, ref)} | {_fmt_s(exact)} | {_rel_diff(ours, ref)} | "
                    f"{_rel_diff(ours, exact)} | {_fmt_mb(ours)} | {_fmt_mb(ref)} | "
                    f"{_fmt_mb(exact)} | {_load(ours, ref, exact)} | "
                    f"{_notes(('ours', ours), ('POT', ref), ('exact', exact))} |")
            rows.append({"table": title, "n": size, "dim": base["dim"], "pass": pass_,
                         "ours": ours, "pot": ref, "exact": exact, "line": line})
            print(line, file=file, flush=True)
    return rows


def run(sizes: Sequence[int] = (1000, 5000, 20000), dim: int = 384,
        n_classes: int = DEFAULT_CLASSES, repeats: int = 3, include_backward: bool = True,
        file: TextIO = sys.stdout, *, reg: float | None = None, seed: int = 0,
        repeated: bool = True, outer_only: bool = True, threads: int | None = None,
        timeout: float = CELL_TIMEOUT_S, pot_max_size: int | None = None,
        mem_limit_gb: float | None = MEM_LIMIT_GB,
        profile: bool = False) -> list[dict[str, Any]]:
    """Time ours against the POT reference; print markdown tables; return one dict per row.

    Tables: the full debiased OTDD (Gaussian label term); the outer OT alone (no label term,
    not debiased: the Sinkhorn engines compared directly); the align stage's repeated calls.
    ``threads``: torch threads in each cell (default: torch's default). ``pot_max_size``:
    larger sizes skip the POT cell, printed as missing with the reason. Each row records the
    1-minute load average seen by its cells: on a shared machine the times depend on it.
    ``profile``: first, per size and for the align-stage call, where one forward+backward
    spends its time and the floor that this machine's measured rates set
    (:mod:`transmodal.bench.align_profile`).
    """
    import torch

    from transmodal.align.distances import DEFAULT_MAX_ITER, DEFAULT_REG, DEFAULT_TOL

    reg = DEFAULT_REG if reg is None else reg
    base = dict(dim=dim, n_classes=n_classes, reg=reg, seed=seed, repeats=repeats,
                threads=threads, mem_limit_gb=mem_limit_gb)
    rows: list[dict[str, Any]] = []
    print(f"Align-loss speed: float32 features, {n_classes} classes per side, reg {reg} "
          f"(relative), tol {DEFAULT_TOL:g}, max_iter {DEFAULT_MAX_ITER}, torch threads "
          f"{threads or torch.get_num_threads()} on {os.cpu_count()} CPUs; times are the median "
          f"of {repeats} runs after one warm-up (none above N={WARMUP_MAX_SIZE}). "
          "Peak MB: extra "
          f"peak RSS of a fresh process running the cell (capped at {mem_limit_gb} GB of address space). Load: 1-minute "
          "load average during the cell.", file=file, flush=True)
    if profile:
        from .align_profile import print_profile

        for size in sizes:
            r = _run_cell({**base, "impl": "profile", "n": size, "m": size}, timeout)
            rows.append({"table": "profile", "n": size, "result": r})
            print_profile(f"Profile: debiased OTDD forward+backward, N=M={size}, D={dim}, one "
                          "call (the source side included)", r, file)
        if repeated:
            r = _run_cell({**base, "impl": "profile", "n": REPEATED_SOURCE, "m": REPEATED_TARGET,
                           "cached_source": True}, timeout)
            rows.append({"table": "profile", "n": REPEATED_SOURCE, "result": r})
            print_profile(f"Profile: align-stage call, {REPEATED_TARGET} target vs "
                          f"{REPEATED_SOURCE} cached source points (OTDDSource), forward+backward",
                          r, file)
    passes = [False, True] if include_backward else [False]
    rows += _table("Debiased OTDD, Gaussian label term (the align loss)", sizes, passes,
                  {**base, "label": True, "debiased": True}, timeout, pot_max_size, file)
    if outer_only:
        rows += _table("Outer OT only: no label term, not debiased (`ot.dist` + `ot.sinkhorn2`)",
                       sizes, passes, {**base, "label": False, "debiased": False}, timeout,
                       pot_max_size, file)
    if repeated:
        print(f"\nRepeated calls (align stage): debiased OTDD, a new batch of {REPEATED_TARGET} "
              f"target points per call against {REPEATED_SOURCE} cached source points, "
              f"forward+backward, median over {repeats} calls.\n", file=file)
        print("| variant | per call (s) | POT/ours | rel. diff vs POT | rel. diff vs exact "
              "| peak MB | load | notes |", file=file)
        print("|---|---|---|---|---|---|---|---|", file=file, flush=True)
        spec = {**base, "n": REPEATED_SOURCE, "m": REPEATED_TARGET, "backward": True,
                "new_batches": True, "label": True, "debiased": True}
        ref = _run_cell({**spec, "impl": "pot"}, timeout)
        exact = _run_cell({**spec, "impl": "exact", "backward": False}, timeout)
        for impl, label in (("pot", "POT reference (recomputes everything)"),
                            ("exact", "exact POT: our cost, float64, L1 tol 1e-6 (value only)"),
                            ("ours", "ours, plain call (recomputes the source side)"),
                            ("ours_source", "ours with OTDDSource (source side once)")):
            r = {"pot": ref, "exact": exact}.get(impl)
            if r is None:
                r = _run_cell({**spec, "impl": impl}, timeout)
            notes = "; ".join(([r["error"]] if "error" in r else []) + r.get("notes", []))
            if r.get("source_build_s") is not None:
                built = f"OTDDSource built once in {r['source_build_s']:.2f} s"
                notes = f"{notes}; {built}" if notes else built
            ours_row = impl.startswith("ours")
            line = (f"| {label} | {_fmt_s(r)} | {_speedup(r, ref)} | "
                    f"{_rel_diff(r, ref) if ours_row else '—'} | "
                    f"{_rel_diff(r, exact) if ours_row else '—'} | {_fmt_mb(r)} | "
                    f"{_load(r)} | {notes} |")
            rows.append({"table": "repeated", "variant": impl, "result": r, "line": line})
            print(line, file=file, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="transmodal bench align",
                                     description="Speed of the OTDD align loss against POT.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000],
                        help="N = M values (default 1000 5000 20000)")
    parser.add_argument("--dim", type=int, default=384, help="feature dimension (default 384)")
    parser.add_argument("--classes", type=int, default=DEFAULT_CLASSES,
                        help=f"classes per side (default {DEFAULT_CLASSES})")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (default 3)")
    parser.add_argument("--reg", type=float, default=None, help="relative entropic regularisation")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per cell")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--no-outer", action="store_true", help="skip the outer-OT-only table")
    parser.add_argument("--no-repeated", action="store_true", help="skip the repeated-call table")
    parser.add_argument("--pot-max-size", type=int, default=None,
                        help="skip the POT reference above this N")
    parser.add_argument("--timeout", type=float, default=CELL_TIMEOUT_S,
                        help=f"seconds per cell subprocess (default {CELL_TIMEOUT_S})")
    parser.add_argument("--mem-limit-gb", type=float, default=MEM_LIMIT_GB,
                        help=f"address-space cap per cell, 0 for none (default {MEM_LIMIT_GB:g})")
    parser.add_argument("--profile", action="store_true",
                        help="first print where one forward+backward spends its time and the "
                             "floor set by this machine's measured matrix-product and "
                             "eigensolver rates")
    parser.add_argument("--quick", action="store_true",
                        help="N=M=500, D=64, 1 repeat: a smoke test of the benchmark itself")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker is not None:
        print(json.dumps(_worker(json.loads(args._worker))))
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.quick:
        args.sizes, args.repeats, args.dim = [500], 1, 64
    run(args.sizes, dim=args.dim, n_classes=args.classes, repeats=args.repeats,
        include_backward=not args.no_backward, reg=args.reg, repeated=not args.no_repeated,
        outer_only=not args.no_outer, threads=args.threads, timeout=args.timeout,
        pot_max_size=args.pot_max_size, mem_limit_gb=args.mem_limit_gb or None,
        profile=args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
