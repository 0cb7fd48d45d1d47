"""``transmodal bench speed``: the table's rows and columns, and ratios consistent with MFU."""

import math

from transmodal.bench import train_speed


def test_speed_bench_quick_table(capsys):
    assert train_speed.main(["--quick", "--threads", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "| tokens | path | s/step | GFLOP/step | GFLOP/s | MFU | vs bare fp32 |" in out
    for path in ("dense matmul fp32", "bare torch step fp32", "fused AdamW", "bf16 autocast",
                 "transmodal refine step", "transmodal refine epoch"):
        assert path in out
    assert "largest gap first" in out and "| total (refine)" in out and "| total (bare)" in out


def test_speed_rows_consistent(tiny_bodies):
    res = train_speed.measure(str(tiny_bodies["bert"]), tokens=8, batch_size=2, steps=2,
                              rounds=1, n_val=2, bf16_steps=1, length=24)
    assert res["tokens"] == 8 and res["refine_profile"] is None
    rate, bare, *rest = res["rows"]
    assert rate["gflops_s"] > 0 and bare["vs_bare"] == 1.0
    for r in [bare, *rest]:
        assert math.isfinite(r["mfu"]) and r["mfu"] > 0
        assert math.isclose(r["gflops_s"], r["gflop_step"] / r["s_step"])
        assert math.isclose(r["mfu"], r["gflops_s"] / rate["gflops_s"])
        # speed against the bare step per unit of work = the MFU ratio
        assert math.isclose(r["vs_bare"], r["mfu"] / bare["mfu"])
    step, epoch = rest[2], rest[3]
    assert step["gflop_step"] == bare["gflop_step"]  # the same model and batch
    assert epoch["gflop_step"] > step["gflop_step"]  # + the validation forward passes


def test_fused_adamw_option(tiny_bodies, toy_series):
    """--fused-adamw: torch's fused AdamW in the refine stage; off by default (the default
    optimizer keeps the recorded outputs bit-identical), and close to it when on."""
    import numpy as np
    import torch

    import transmodal
    from transmodal.engine.optim import build_optimizer

    model = torch.nn.Linear(4, 2)
    model.pretrained_parameters = lambda: []  # a model without a pretrained body
    assert build_optimizer(model, 1e-4, 1e-3, 0.01).defaults["fused"] is None
    assert build_optimizer(model, 1e-4, 1e-3, 0.01, fused=True).defaults["fused"] is True
    x, y = toy_series
    fast = dict(body=tiny_bodies["bert"], epochs=2, batch_size=8, max_tokens=16, seed=0,
                progress=False, head_init="random")
    plain = transmodal.fit((x, y), **fast)
    fused = transmodal.fit((x, y), fused_adamw=True, **fast)
    assert fused.config.fused_adamw and not plain.config.fused_adamw
    a = plain.model.state_dict()
    b = fused.model.state_dict()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    # a different kernel (diff > 0), the same fit up to rounding: Adam's steps are at most ~lr
    # (1e-3 here), so rounding that flips a tiny update moves a weight by ~lr at most per step
    assert 0 < diff < 1e-2
