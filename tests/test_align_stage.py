import json

import numpy as np
import pytest
import torch

import transmodal
from transmodal.align.reference import source_reference
from transmodal.align.stage import align
from transmodal.engine.optim import make_accelerator
from transmodal.config import FitConfig
from transmodal.errors import ConfigError
from transmodal.models.bodies import load_body
from transmodal.models.model import ModelSpec, build_model
from transmodal.tasks import get_task

CPU = make_accelerator("cpu", "fp32")[0]

FAST = dict(epochs=2, batch_size=8, progress=False, max_tokens=16)


def test_text_source_reference_is_labelled_and_cached(tiny_bodies, monkeypatch):
    body = load_body(tiny_bodies["bert"])
    xs, ys = source_reference(body, tiny_bodies["bert"], max_points=600)
    assert xs.shape[1] == 32 and len(xs) == len(ys) and len(torch.unique(ys)) >= 10
    assert torch.isfinite(xs).all()
    # the second call reads the cache: no embedding work at all
    monkeypatch.setattr(type(body), "embed_ids", lambda *a, **k: pytest.fail("recomputed"))
    xs2, _ = source_reference(body, tiny_bodies["bert"], max_points=600)
    assert torch.equal(xs, xs2)


def test_image_source_reference_from_digits(tiny_bodies):
    body = load_body(tiny_bodies["vit"])
    xs, ys = source_reference(body, tiny_bodies["vit"], max_points=300)
    assert xs.shape == (300, 32) and set(ys.tolist()) == set(range(10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["bert", "vit"])
def test_source_reference_of_a_body_on_cuda(tiny_bodies, name, tmp_path, monkeypatch):
    """A body already on the GPU (as in a fit with --align) gives the CPU's reference, on the CPU.
    Found on an H200: the cache key read a CUDA tensor with .numpy() and --align failed there."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convolutions, as on the CPU
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    body = load_body(tiny_bodies[name])
    monkeypatch.setenv("TRANSMODAL_CACHE", str(tmp_path / "cpu"))
    xs, ys = source_reference(body, tiny_bodies[name], max_points=300)
    monkeypatch.setenv("TRANSMODAL_CACHE", str(tmp_path / "cuda"))
    xs_gpu, ys_gpu = source_reference(body.cuda(), tiny_bodies[name], max_points=300)
    assert xs_gpu.device.type == "cpu" and torch.equal(ys, ys_gpu)
    torch.testing.assert_close(xs_gpu, xs, rtol=1e-3, atol=1e-3)
    assert list((tmp_path / "cpu").iterdir())[0].name == list((tmp_path / "cuda").iterdir())[0].name


def test_body_without_tokenizer_refused(tiny_bodies):
    body = load_body(tiny_bodies["roberta"])  # saved without tokenizer files
    with pytest.raises(ConfigError, match="tokenizer"):
        source_reference(body, tiny_bodies["roberta"])


@pytest.mark.parametrize("method", ["otdd", "mmd", "l2"])
def test_align_moves_only_the_embedder_and_lowers_the_distance(tiny_bodies, toy_series, method):
    x, y = toy_series
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[48],
                     body=tiny_bodies["bert"], max_tokens=16)
    model = build_model(spec)
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    emb_before = model.embedder.proj.weight.clone()
    cfg = FitConfig(align=method, align_epochs=6, head_lr=1e-2)
    x_in = ((x - x.mean()) / x.std())[:, None].astype(np.float32)
    out = align(model, x_in, y, cfg, tiny_bodies["bert"], CPU, progress=False)
    dist = [r["distance"] for r in out["history"]]
    assert len(dist) == 6 and dist[-1] < dist[0]
    assert all(torch.equal(v, model.body.state_dict()[k]) for k, v in body_before.items())
    assert not torch.equal(emb_before, model.embedder.proj.weight)
    assert all(p.requires_grad for p in model.body.parameters())  # flags restored for refine


def test_target_features_of_a_whole_set_are_taken_chunk_by_chunk(tiny_bodies, monkeypatch):
    """The align stage keeps the data on the CPU and moves one chunk at a time to the device:
    chunked features (3 chunks, the last one short) equal the one-batch ones."""
    from transmodal.align import stage

    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[48],
                     body=tiny_bodies["bert"], max_tokens=16)
    model = build_model(spec).eval()
    monkeypatch.setattr(stage, "ALIGN_CHUNK", 4)
    x = torch.randn(10, 1, 48)
    with torch.no_grad():
        whole = stage.target_features(model, x)  # (10, D)
    chunked = stage.all_target_features(model, x, torch.device("cpu"))
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole)


def test_fit_with_align_logs_and_plots(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], align="otdd",
                         align_epochs=3, **FAST)
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["align"] * 3 + ["refine"] * 2
    assert all(np.isfinite(r["distance"]) for r in records[:3])
    assert (tmp_path / "run" / "report" / "align_distance.png").exists()
    assert (tmp_path / "run" / "report" / "align_embedding.png").exists()
    assert run.summary["times"]["align"] > 0


def test_regression_targets_get_kmeans_pseudo_labels():
    y = np.concatenate([np.zeros(10), np.ones(10) * 5, np.ones(10) * 10])[:, None]
    labels = get_task("regression").alignment_labels(y, k=3, seed=0)
    assert len(np.unique(labels)) == 3
    assert all(len(np.unique(labels[i * 10:(i + 1) * 10])) == 1 for i in range(3))


def test_align_with_cnn_or_scratch_refused(toy_series):
    x, y = toy_series
    with pytest.raises(ConfigError, match="--align with --tune scratch"):
        transmodal.fit((x, y), align="otdd", tune="scratch")


def test_ablation_benchmark_table(tiny_bodies, toy_series, tmp_path, capsys):
    from transmodal.bench import ablate

    x, y = toy_series
    np.savez(tmp_path / "d.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    assert ablate.main(["--data", str(tmp_path / "d.npz"), "--align", "l2", "--align-epochs", "0", "2",
                        "--seeds", "0", "1", "--epochs", "1", "--body", tiny_bodies["bert"],
                        "--csv", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.startswith("| 0 |") or l.startswith("| 2 |")]
    assert len(rows) == 2 and all(l.count("|") == 6 for l in rows)
    assert len((tmp_path / "a.csv").read_text().splitlines()) == 5  # header + 2 x 2 fits


@pytest.mark.parametrize("on_nan", ["stop", "skip"])
def test_non_finite_alignment_distance_stops_or_is_skipped(tiny_bodies, toy_series, monkeypatch, on_nan):
    from transmodal.align import objectives
    from transmodal.engine import NonFiniteError

    x, y = toy_series  # 32 samples: one align step per epoch
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[48],
                     body=tiny_bodies["bert"], max_tokens=16)
    model = build_model(spec)
    real, calls = objectives.L2Alignment.distance, [0]

    def distance(self, xt, yt):  # the 2nd step's distance is NaN
        calls[0] += 1
        d = real(self, xt, yt)
        return d * float("nan") if calls[0] == 2 else d

    monkeypatch.setattr(objectives.L2Alignment, "distance", distance)
    cfg = FitConfig(align="l2", align_epochs=3, on_nan=on_nan)
    x_in = ((x - x.mean()) / x.std())[:, None].astype(np.float32)
    with pytest.raises(ConfigError, match="learning rates are not set"):  # fit fills them in
        align(model, x_in, y, cfg, tiny_bodies["bert"], CPU, progress=False)
    cfg = get_task("classification").with_defaults(cfg)  # as fit does
    if on_nan == "stop":
        with pytest.raises(NonFiniteError, match="non-finite alignment distance in stage align, epoch 2"):
            align(model, x_in, y, cfg, tiny_bodies["bert"], CPU, progress=False)
        return
    out = align(model, x_in, y, cfg, tiny_bodies["bert"], CPU, progress=False)
    assert [r["skipped_steps"] for r in out["history"]] == [0, 1, 0]
    assert [r["step"] for r in out["history"]] == [1, 1, 2]
    assert all(torch.isfinite(p).all() for p in model.embedder.parameters())
