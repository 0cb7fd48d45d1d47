"""--precision auto: fp32 on CPU; on a GPU bf16 only for train steps large enough to gain from it."""

import torch

from transmodal.engine import optim
from transmodal.engine.optim import BF16_MIN_STEP_WORK, auto_precision, step_work
from transmodal.models.bodies import load_body
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


def test_fit_and_predict_record_the_resolved_precision(tiny_bodies, tmp_path, monkeypatch):
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
    monkeypatch.setattr("transmodal.run.run.make_accelerator",
                        lambda device, precision, *a: seen.append(precision) or real(device, precision, *a))
    loaded = transmodal.load(tmp_path / "run")
    loaded.predict(x[:3])
    assert seen == ["fp32"]  # prediction uses what training resolved 'auto' to
