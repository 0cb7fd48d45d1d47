"""--precision auto: fp32 on CPU; on a GPU bf16 only for train steps large enough to gain from it."""

import pytest
import torch

from transmodal.engine import optim
from transmodal.engine.optim import BF16_MIN_STEP_WORK, auto_precision, step_work
from transmodal.models.model import ModelSpec, build_model


def test_auto_precision_rule(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    minilm = 384 ** 2
    assert auto_precision(use_cpu=True, work=1e18) == "fp32"  # the CPU never autocasts by default
    assert auto_precision(False, 16 * 64 * minilm) == "fp32"  # fit's defaults: 0.80x measured
    assert auto_precision(False, 64 * 128 * minilm) == "bf16"  # 1.08x
    assert auto_precision(False, 64 * 512 * minilm) == "bf16"  # 3.94x
    assert auto_precision(False, 16 * 128 * 768 ** 2) == "bf16"  # a wider body crosses sooner
    assert auto_precision(False, None) == "bf16"  # unknown work (pixel bodies): bf16 as before
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert auto_precision(False, 1e18) == "fp32"


def test_step_work_counts_tokens_and_width(tiny_bodies):
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[64],
                     body=tiny_bodies["bert"], max_tokens=16)
    model = build_model(spec)
    width = model.body.embed_dim
    assert step_work(model, 8, 16) == 8 * 16 * width ** 2
    assert step_work(model, 8, None) is None
    assert step_work(torch.nn.Linear(2, 2), 8, 16) is None  # no body: unknown
    assert 8 * 16 * width ** 2 < BF16_MIN_STEP_WORK  # a tiny test body stays fp32 on a GPU too


def test_fit_records_and_predict_resolves_the_same_precision(tiny_bodies, tmp_path, monkeypatch):
    import numpy as np

    import transmodal

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 32)).astype(np.float32)
    y = np.repeat([0, 1], 12)
    x[y == 1] += 1.0
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], epochs=1, batch_size=8, progress=False,
                         max_tokens=8, out=tmp_path / "run", baselines="none")
    assert run.summary["precision"] == "fp32"
    seen = []
    real = optim.make_accelerator

    def spy(device, precision, work=None):
        acc, resolved = real(device, precision, work)
        seen.append((precision, work, resolved))
        return acc, resolved

    monkeypatch.setattr("transmodal.run.run.make_accelerator", spy)
    loaded = transmodal.load(tmp_path / "run")
    loaded.predict(x[:3])
    # prediction resolves 'auto' from the same step work as training (so on a GPU the same choice)
    assert seen == [("auto", step_work(loaded.model, 8, 8), "fp32")]
    assert seen[0][1] == 8 * 8 * loaded.model.body.embed_dim ** 2


def test_fits_of_another_precision_in_one_process(tiny_bodies):
    """accelerate allows one precision per process; a search, a benchmark or a grid search may
    resolve another for its next fit (on a GPU --precision auto depends on the step's size)."""
    import numpy as np

    import transmodal
    from transmodal.engine.optim import make_accelerator

    first, _ = make_accelerator("cpu", "fp32")
    second, _ = make_accelerator("cpu", "bf16")
    assert second.mixed_precision == "bf16"
    with first.autocast():  # an accelerator built before keeps its own (no) autocast
        assert not torch.is_autocast_enabled("cpu")
    with second.autocast():
        assert torch.is_autocast_enabled("cpu")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 1, 32)).astype(np.float32)
    y = np.repeat([0, 1], 8)
    runs = [transmodal.fit((x, y), body=tiny_bodies["bert"], epochs=1, batch_size=8, progress=False,
                           max_tokens=8, baselines="none", precision=p) for p in ("fp32", "bf16", "fp32")]
    assert [r.summary["precision"] for r in runs] == ["fp32", "bf16", "fp32"]
    assert all(np.isfinite(r.predict_proba(x[:2])).all() for r in runs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_a_run_trained_with_device_cuda_predicts_without_a_gpu(tiny_bodies, tmp_path):
    import dataclasses

    import numpy as np

    import transmodal

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 1, 32)).astype(np.float32)
    y = np.repeat([0, 1], 8)
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], epochs=1, batch_size=8, progress=False,
                         max_tokens=8, baselines="none", out=tmp_path / "run")
    loaded = transmodal.load(tmp_path / "run")
    loaded.config = dataclasses.replace(loaded.config, device="cuda")  # as fitted on a GPU
    np.testing.assert_allclose(loaded.predict_proba(x[:4]), run.predict_proba(x[:4]), rtol=1e-6)
    # fitted with --precision bf16 on a GPU: the CPU predicts in fp32 (the weights are fp32;
    # CPU bf16 is slow), the same probabilities as the fp32 run
    again = transmodal.load(tmp_path / "run")
    again.config = dataclasses.replace(again.config, device="cuda", precision="bf16")
    again.summary["device"] = "cuda:0"
    np.testing.assert_allclose(again.predict_proba(x[:4]), run.predict_proba(x[:4]), rtol=1e-6)
    assert again._accelerator.mixed_precision == "no"


def test_saving_rng_state_leaves_an_unused_cuda_alone(monkeypatch):
    """A CPU run on a GPU machine: the RNG snapshots (checkpoints, side-by-side folds) must not
    ask CUDA for its generators' state, which would start a CUDA context on every GPU."""
    from transmodal.engine import lockstep
    from transmodal.run import checkpoint

    def started(*_):
        raise AssertionError("CUDA was asked for its RNG state")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", started)
    assert lockstep.torch_rng_state()[1] is None
    assert checkpoint.rng_state()["cuda"] == []


def test_restoring_rng_state_leaves_an_unused_cuda_alone(monkeypatch):
    """Resuming a GPU-written checkpoint with --device cpu on a GPU machine: the CPU state comes
    back, the saved CUDA generators are not restored (that would start a CUDA context)."""
    from transmodal.engine import lockstep
    from transmodal.run import checkpoint

    def started(*_):
        raise AssertionError("CUDA's generators were restored")

    state = checkpoint.rng_state()
    expected = torch.rand(3)
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as a 1-GPU run writes it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", started)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)
    lockstep.set_torch_rng_state((state["torch"], state["cuda"]))  # side-by-side folds: the same
    assert torch.equal(torch.rand(3), expected)
