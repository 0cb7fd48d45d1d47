"""Cost helpers: matmul rate, exact FlopCounterMode counts, peak memory, timer."""

import math
import time

import numpy as np
import pytest
import torch

from transmodal.bench.cost import (
    PeakMemory,
    Timer,
    count_training_flops,
    measure_matmul_flops,
    model_flop_utilisation,
    read_rss_bytes,
)
from transmodal.errors import ConfigError

B, IN, HID, OUT = 8, 16, 32, 4


def test_matmul_rate_is_positive_and_finite():
    rate = measure_matmul_flops(size=256, repeats=3, warmup=1)
    assert math.isfinite(rate) and rate > 0


def test_matmul_rejects_bad_arguments():
    with pytest.raises(ConfigError):
        measure_matmul_flops(dtype=torch.int32)
    with pytest.raises(ConfigError):
        measure_matmul_flops(size=0)


def _sq(out):
    return out.pow(2).mean()


def test_linear_flops_forward_backward_exact():
    torch.manual_seed(0)
    lin = torch.nn.Linear(IN, OUT)
    x = torch.randn(B, IN)
    # forward addmm 2*B*IN*OUT + weight-gradient mm 2*B*IN*OUT; the data need no gradient.
    assert count_training_flops(lin, x, _sq) == 4 * B * IN * OUT
    # differentiating the input too adds the input-gradient mm: the textbook 3 * 2 * B*IN*OUT.
    assert count_training_flops(lin, x, _sq, include_input_grads=True) == 6 * B * IN * OUT
    assert lin.weight.grad is None  # counting leaves .grad untouched


def test_mlp_flops_match_layer_by_layer_derivation():
    mlp = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
    x = torch.randn(B, IN)
    # layer 2 needs weight and input gradients (3 matmuls), layer 1 only its weight gradient (2);
    # ReLU and the loss count 0 in FlopCounterMode.
    expected = 3 * 2 * B * HID * OUT + 2 * 2 * B * IN * HID
    assert count_training_flops(mlp, (x,), _sq) == expected
    assert count_training_flops(mlp, {"input": x}, _sq) == expected


def test_flop_count_needs_scalar_loss_and_trainable_params():
    lin = torch.nn.Linear(IN, OUT)
    with pytest.raises(ConfigError):
        count_training_flops(lin, torch.randn(B, IN), lambda out: out)
    lin.requires_grad_(False)
    with pytest.raises(ConfigError):
        count_training_flops(lin, torch.randn(B, IN), _sq)


def test_model_flop_utilisation():
    assert model_flop_utilisation(1e9, 4e9) == pytest.approx(0.25)
    with pytest.raises(ConfigError):
        model_flop_utilisation(1e9, 0.0)


@pytest.mark.skipif(read_rss_bytes() is None, reason="needs /proc/self/status (Linux)")
def test_peak_memory_sees_a_200mb_allocation():
    size = 200 * 2**20
    with PeakMemory() as mem:
        block = np.ones(size // 8)  # np.ones writes every page, so it is resident
        time.sleep(0.05)
        del block
    assert mem.delta_rss_bytes is not None and mem.delta_rss_bytes >= 0.9 * size
    assert mem.peak_rss_bytes >= mem.start_rss_bytes + 0.9 * size
    assert mem.cuda_peak_bytes is None


def test_timer_measures_a_sleep():
    with Timer() as t:
        time.sleep(0.05)
    assert 0.04 < t.elapsed_s < 1.0
