"""Cost measurement: wall time, peak memory, FLOPs and model FLOP utilisation.

A benchmark that reports accuracy without cost hides half the answer: a transformer that
matches MiniRocket at 1000x the compute has not "helped". These helpers measure the cost side
with real counts and real clocks, never estimates dressed up as measurements.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from transmodal.errors import ConfigError

__all__ = [
    "Timer",
    "PeakMemory",
    "measure_matmul_flops",
    "count_training_flops",
    "model_flop_utilisation",
    "read_rss_bytes",
]

_STATUS = "/proc/self/status"


def _sync(device: torch.device) -> None:
    """Wait for queued kernels so that a clock reading covers the work (CUDA is async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


class Timer:
    """Wall-clock timer (``time.perf_counter``): ``with Timer() as t: ...; t.elapsed_s``.

    Pass ``device="cuda"`` to synchronise on entry and exit, otherwise asynchronous GPU work
    would be timed as free.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = None if device is None else _resolve_device(device)
        self.start_s: float | None = None
        self.elapsed_s: float = math.nan

    def __enter__(self) -> Timer:
        if self.device is not None:
            _sync(self.device)
        self.start_s = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device is not None:
            _sync(self.device)
        self.elapsed_s = time.perf_counter() - (self.start_s or 0.0)


def _read_status_kb(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), or None where that file does not exist."""
    try:
        with open(_STATUS, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_rss_bytes() -> int | None:
    """Current resident set size of this process in bytes (None off Linux)."""
    kb = _read_status_kb("VmRSS")
    return None if kb is None else kb * 1024


class PeakMemory:
    """Peak resident memory of the process while the block runs (and CUDA peak when on CUDA).

    How: a daemon thread reads VmRSS from /proc/self/status every ``interval_s`` (10 ms by
    default), and the block's entry and exit are sampled too. Resolution: a spike shorter than
    the interval can be missed by sampling alone, so the kernel's exact high-water mark VmHWM
    is also read on exit; if it rose during the block, the process's peak during the block is
    exactly the new VmHWM and that value is used. (VmHWM is process-lifetime, so if it did not
    rise the sampled value is the best available, a lower bound within one interval.)

    RSS is per process: memory taken by other threads during the block counts too. Off Linux
    (no /proc) the RSS attributes stay None rather than guessing.

    Attributes after the block: ``start_rss_bytes``, ``peak_rss_bytes``, ``delta_rss_bytes``
    (peak minus start: what the block added), ``cuda_peak_bytes`` (``torch.cuda``'s
    ``max_memory_allocated`` since entry, only when ``device`` is CUDA), ``exact`` (True when the
    peak came from VmHWM).
    """

    def __init__(self, interval_s: float = 0.01, device: str | torch.device | None = None) -> None:
        if not interval_s > 0:
            raise ConfigError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.device = None if device is None else _resolve_device(device)
        self.start_rss_bytes: int | None = None
        self.peak_rss_bytes: int | None = None
        self.delta_rss_bytes: int | None = None
        self.cuda_peak_bytes: int | None = None
        self.exact = False
        self._hwm_start_kb: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_kb = 0

    def _sample(self) -> None:
        kb = _read_status_kb("VmRSS")
        if kb is not None and kb > self._peak_kb:
            self._peak_kb = kb

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakMemory:
        if self.device is not None and self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        rss_kb = _read_status_kb("VmRSS")
        if rss_kb is not None:
            self.start_rss_bytes = rss_kb * 1024
            self._peak_kb = rss_kb
            self._hwm_start_kb = _read_status_kb("VmHWM")
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="PeakMemory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()
            peak_kb = self._peak_kb
            hwm_kb = _read_status_kb("VmHWM")
            hwm_start = self._hwm_start_kb
            if hwm_kb is not None and hwm_start is not None and hwm_kb > hwm_start:
                peak_kb = max(peak_kb, hwm_kb)
                self.exact = True
            self.peak_rss_bytes = peak_kb * 1024
            self.delta_rss_bytes = self.peak_rss_bytes - (self.start_rss_bytes or 0)
        if self.device is not None and self.device.type == "cuda":
            _sync(self.device)
            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated(self.device))


def measure_matmul_flops(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 1024,
    repeats: int = 10,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """This machine's dense matmul rate in FLOP/s: median over ``repeats`` n x n products.

    One n x n by n x n product is counted as 2 n^3 FLOPs (n^2 outputs, n multiply-adds each).
    Warm-up runs first (thread pools, cuBLAS handles, clocks). ``dtype=torch.bfloat16`` on a
    GPU gives the tensor-core rate to set against bf16 training; on a CPU it is usually slow.
    The result is the achievable rate, the honest denominator for model FLOP utilisation.
    ``clock``: wall time by default; ``time.process_time`` counts only this process's CPU
    time, which other processes on a loaded machine do not inflate (one thread: the rate the
    thread achieves while it runs).
    """
    dev = _resolve_device(device)
    if not dtype.is_floating_point:
        raise ConfigError(f"dtype must be a floating type, got {dtype}")
    if size < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(
            f"need size >= 1, repeats >= 1, warmup >= 0; got {size}, {repeats}, {warmup}"
        )
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=dev, dtype=dtype)  # (n, n)
    b = torch.randn(size, size, generator=gen).to(device=dev, dtype=dtype)  # (n, n)
    out = torch.empty(size, size, device=dev, dtype=dtype)  # (n, n), reused: no allocation timed
    with torch.no_grad():
        for _ in range(warmup):
            torch.matmul(a, b, out=out)
        _sync(dev)
        times = []
        for _ in range(repeats):
            t0 = clock()
            torch.matmul(a, b, out=out)
            _sync(dev)
            times.append(clock() - t0)
    median = statistics.median(times)
    if median <= 0:
        # A clock too coarse for this size: a larger size gives a measurable time.
        raise ConfigError(f"matmul of size {size} took no measurable time; use a larger size")
    return 2.0 * size**3 / median


def _call(model: torch.nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        return model(*inputs)
    return model(inputs)


def _with_input_grads(inputs: Any) -> tuple[Any, list[torch.Tensor]]:
    """Copies of the floating-point input tensors that require grad, and the list of them."""
    leaves: list[torch.Tensor] = []

    def leaf(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.detach().clone().requires_grad_(True)
            leaves.append(t)
        return t

    if isinstance(inputs, Mapping):
        return {k: leaf(v) for k, v in inputs.items()}, leaves
    if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        return type(inputs)(leaf(v) for v in inputs), leaves
    return leaf(inputs), leaves


def count_training_flops(
    model: torch.nn.Module,
    example_inputs: Any,
    loss_fn: Callable[[Any], torch.Tensor],
    include_input_grads: bool = False,
) -> int:
    """FLOPs of one training step's forward + backward, counted by ``FlopCounterMode``.

    ``example_inputs``: a tensor, a tuple/list of positional inputs, or a dict of keyword
    inputs; ``loss_fn`` maps the model's output to a scalar loss. The backward pass
    differentiates the trainable parameters (their ``.grad`` is restored afterwards), as in
    training where the data need no gradient: for a single ``Linear`` that is
    2*B*in*out forward + 2*B*in*out for the weight gradient = 4*B*in*out. With
    ``include_input_grads=True`` the floating inputs are differentiated too (+2*B*in*out, the
    "6 N per token" picture).

    Real counts, not a 6N rule, but ``FlopCounterMode`` only knows matmul-like ops (mm, addmm,
    bmm, baddbmm), convolutions and scaled-dot-product attention: elementwise ops, norms,
    softmax, embeddings and losses count as 0. The model's train/eval mode is left as given.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params and not include_input_grads:
        raise ConfigError("model has no trainable parameters: nothing to differentiate")
    inputs, leaves = (
        _with_input_grads(example_inputs) if include_input_grads else (example_inputs, [])
    )
    if not params and not leaves:
        raise ConfigError("neither parameters nor inputs need gradients: nothing to count")
    # backward() rather than autograd.grad(): FlopCounterMode's module hooks cannot handle an
    # input leaf under autograd.grad. Existing .grad values are put back afterwards.
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with FlopCounterMode(display=False) as counter:
            loss = loss_fn(_call(model, inputs))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ConfigError("loss_fn must return a scalar tensor")
            loss.backward()
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return int(counter.get_total_flops())


def model_flop_utilisation(
    train_flops_per_second: float, peak_flops_per_second: float
) -> float:
    """Achieved training FLOP/s over the hardware's (measured or rated) peak FLOP/s, in [0, ~1]."""
    if not (math.isfinite(train_flops_per_second) and train_flops_per_second >= 0):
        raise ConfigError(
            f"train_flops_per_second must be finite and >= 0, got {train_flops_per_second}"
        )
    if not (math.isfinite(peak_flops_per_second) and peak_flops_per_second > 0):
        raise ConfigError(
            f"peak_flops_per_second must be finite and > 0, got {peak_flops_per_second}"
        )
    return train_flops_per_second / peak_flops_per_second
