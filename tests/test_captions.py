"""A caption per sample for the contrastive objective (issue 11, parts 2 and 4): text_train /
text_test arrays and --text-column, retrieval recall@k for validation (best epoch) and test,
save/load, the shared-text rule for identical captions, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.errors import ConfigError, DataError
from transmodal.tasks import get_task
from transmodal.tasks.contrastive import retrieval_recall

FAST = dict(epochs=3, batch_size=8, max_tokens=16, progress=False)


def captioned(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sine or square waves of several amplitudes; the caption says both (some repeat)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, 48)
    kind = np.array(["sine", "square"] * (n // 2))
    amp = rng.choice([0.5, 1.0, 1.5, 2.0, 2.5], size=n)
    wave = np.where(kind[:, None] == "sine", np.sin(t), np.sign(np.sin(t)))
    x = (wave * amp[:, None] + 0.2 * rng.normal(size=(n, 48))).astype(np.float32)
    text = np.array([f"a {k} wave of amplitude {a:.1f}" for k, a in zip(kind, amp)])
    return x, text, kind


@pytest.fixture(scope="module")
def cap_run(tiny_bodies, tmp_path_factory):
    """A captioned fit that also has labels; the calls of the text encoder are recorded."""
    from transmodal.models.text_tower import TextTower

    x, text, kind = captioned()
    out = tmp_path_factory.mktemp("captions") / "run"
    data = {"x_train": x[:30], "text_train": text[:30], "y_train": kind[:30],
            "x_test": x[30:], "text_test": text[30:], "y_test": kind[30:]}
    calls: list[tuple[str, ...]] = []
    original = TextTower.pooled

    def recording(self, texts):
        calls.append(tuple(texts))
        return original(self, texts)

    TextTower.pooled = recording
    try:
        run = transmodal.fit(data, out=out, body=tiny_bodies["bert"], text_body=tiny_bodies["bert"],
                             objective="contrastive", **FAST)
    finally:
        TextTower.pooled = original
    return run, out, calls


# ----------------------------------------------------------------------------- recall@k


def test_recall_at_k_against_a_hand_computed_example():
    # 4 samples, 3 distinct captions; samples 0 and 2 share caption 0
    logits = np.array([[0.9, 0.1, 0.5],    # own text 0: rank 1
                       [0.8, 0.2, 0.7],    # own text 1: 0.8 and 0.7 are better -> rank 3
                       [0.3, 0.6, 0.1],    # own text 0: 0.6 is better -> rank 2
                       [0.2, 0.4, 0.3]])   # own text 2: 0.4 is better -> rank 2
    text_of = np.array([0, 1, 0, 2])
    got = retrieval_recall(logits, text_of, ks=(1, 2))
    # sample -> text: hits at k=1: sample 0 only; at k=2: samples 0, 2, 3
    assert got["sample_to_text_recall_at_1"] == pytest.approx(1 / 4)
    assert got["sample_to_text_recall_at_2"] == pytest.approx(3 / 4)
    # text -> sample: text 0's best own sample is 0 (0.9, the column's top); text 1's only
    # sample 1 (0.2) is 4th of 4; text 2's sample 3 (0.3) is behind 0.5 and 0.7 -> 3rd
    assert got["text_to_sample_recall_at_1"] == pytest.approx(1 / 3)
    assert got["text_to_sample_recall_at_2"] == pytest.approx(1 / 3)
    assert got["recall_at_1"] == pytest.approx((1 / 4 + 1 / 3) / 2)


def test_identical_captions_share_a_target_and_stay_positives():
    task = get_task("contrastive")
    task.use_captions()
    y = np.array(["b wave", "a wave", "b wave", "c wave"])
    target = task.encode(y)
    assert target.tolist() == [1, 0, 1, 2]  # a caption's index among its split's own captions
    assert task.stratify(y) is None and task.primary == ("recall_at_1", True)
    # the shared-text rule: the two "b wave" samples are pulled together, never pushed apart
    logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]],
                          requires_grad=True)
    task.loss(logits, torch.from_numpy(target)).backward()
    assert (logits.grad[[0, 2], 1] <= 0).all()


# ----------------------------------------------------------------------------- fit, files, APIs


def test_caption_fit_scores_retrieval_both_ways_and_picks_the_epoch_on_it(cap_run):
    run, out, _ = cap_run
    summary = json.loads((out / "summary.json").read_text())
    for split in ("val", "test"):
        scores = summary["metrics"][split]
        for k in (1, 5, 10):
            s2t, t2s = scores[f"sample_to_text_recall_at_{k}"], scores[f"text_to_sample_recall_at_{k}"]
            assert 0 <= s2t <= 1 and 0 <= t2s <= 1
            assert scores[f"recall_at_{k}"] == pytest.approx((s2t + t2s) / 2)
    assert set(summary["metrics"]["test_zero_shot"]) == {"accuracy", "macro_f1"}  # labels exist too
    assert summary["baselines"] == {}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_recall_at_1"] for r in rows if r.get("stage") == "refine"]
    best = max(i for i, v in enumerate(vals) if v == max(vals)) + 1  # a tie goes to the later epoch
    assert summary["best_epoch"] == best
    assert summary["metrics"]["val"]["recall_at_1"] == max(vals)
    assert "closest caption of the split" in (out / "report" / "index.html").read_text()


def test_locked_text_tower_embeds_each_caption_set_once(cap_run):
    """The training captions once, the validation captions once for all 3 epochs."""
    from transmodal.data import split_train_val

    run, _, calls = cap_run
    _, text, _ = captioned()
    task = get_task("contrastive")
    task.use_captions()
    _, va = split_train_val(text[:30], task, 0.2, 0)  # as fit carved it
    train_set = tuple(t for (t,) in run.model.head.class_texts)
    val_set = tuple(np.unique(text[:30][va]).tolist())
    assert calls.count(train_set) == 1 and calls.count(val_set) == 1
    assert run.summary["epochs_run"] == 3


def test_caption_run_round_trips_and_keeps_the_language_apis(cap_run):
    run, out, _ = cap_run
    x, text, kind = captioned()
    spec = json.loads((out / "model" / "model.json").read_text())["spec"]["text"]
    assert spec["class_texts"] == [[t] for t in np.unique(text[:30]).tolist()]  # no templates
    again = transmodal.load(out)
    assert again.preprocessor.target.captions and again.preprocessor.target.primary[0] == "recall_at_1"
    scores = again.evaluate(x[30:], text[30:])
    assert scores == pytest.approx(run.summary["metrics"]["test"])
    np.testing.assert_array_equal(again.embed(x), run.embed(x))
    hits = again.retrieve(x, "a square wave of amplitude 2.0", top_k=3)
    assert len(hits) == 3 and [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert set(again.zero_shot(x, ["sine", "square"])) <= {"sine", "square"}
    assert set(again.predict(x[:5])) <= set(text[:30])  # the closest training caption


def test_csv_text_column_without_labels_through_the_cli(tiny_bodies, tmp_path, capsys):
    x, text, _ = captioned()
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame.insert(0, "caption", text)  # no label column at all
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    run_dir = tmp_path / "run"
    assert main(["fit", "--data", str(tmp_path / "pairs.csv"), "--text-column", "caption",
                 "--objective", "contrastive", "--body", tiny_bodies["bert"], "--text-body",
                 tiny_bodies["bert"], "--epochs", "2", "--batch-size", "8", "--max-tokens", "16",
                 "--out", str(run_dir), "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "recall_at_1" in summary["metrics"]["val"] and summary["n_train"] + summary["n_val"] == 40
    capsys.readouterr()
    # the caption column is no feature: retrieve and evaluate read the same table
    assert main(["retrieve", str(run_dir), "--data", str(tmp_path / "pairs.csv"), "--query",
                 "a sine wave", "--top-k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["evaluate", str(run_dir), "--data", str(tmp_path / "pairs.csv")]) == 0
    assert '"text_to_sample_recall_at_10"' in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input


def _data(**change):
    x, text, _ = captioned()
    d = {"x_train": x[:30], "text_train": text[:30], "x_test": x[30:], "text_test": text[30:]}
    d.update(change)
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("change, error, message", [
    (dict(text_train=np.where(np.arange(30) == 4, "", captioned()[1][:30])), DataError,
     "text_train: the caption of sample 4 is empty"),
    (dict(text_train=np.where(np.arange(30) == 2, "   ", captioned()[1][:30])), DataError,
     "text_train: the caption of sample 2 is empty"),
    (dict(text_train=np.array([*captioned()[1][:29], None], dtype=object)), DataError,
     "caption of sample 29 is missing"),
    (dict(text_train=captioned()[1][:29]), DataError, "text_train has 29 texts but x has 30"),
    (dict(text_train=None), DataError, "has text_test but no text_train"),
    (dict(text_train=np.array([f"word {i} " + "word " * 80 for i in range(30)])), DataError,
     "tokens long; the text tower takes at most 64"),
    (dict(text_test=np.array(["ok", "word " * 80] * 5)), DataError, "tokens long"),
    (dict(text_train=np.array(["same words"] * 30)), DataError, "at least 2 different captions"),
])
def test_bad_captions_leave_no_run_folder(tiny_bodies, tmp_path, change, error, message):
    with pytest.raises(error, match=message):
        transmodal.fit(_data(**change), out=tmp_path / "run", body=tiny_bodies["bert"],
                       text_body=tiny_bodies["bert"], objective="contrastive", **FAST)
    assert not (tmp_path / "run").exists()


def test_bad_caption_options(tiny_bodies, tmp_path, capsys):
    x, text, kind = captioned()
    frame = pd.DataFrame(x[:, :6], columns=[f"f{i}" for i in range(6)])
    frame["caption"] = [t if i != 3 else np.nan for i, t in enumerate(text)]
    frame["label"] = kind
    frame.to_csv(tmp_path / "nan.csv", index=False)
    common = ["--body", tiny_bodies["bert"], "--text-body", tiny_bodies["bert"], "--epochs", "1",
              "--out", str(tmp_path / "run"), "--quiet"]
    rc = main(["fit", "--data", str(tmp_path / "nan.csv"), "--text-column", "caption",
               "--objective", "contrastive", *common])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "the caption of sample 3 is missing (NaN/None)" in err and len(err.splitlines()) == 1
    rc = main(["fit", "--data", str(tmp_path / "nan.csv"), "--text-column", "caption", *common])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--text-column applies to --objective contrastive only" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="--label-column and --text-column are both"):
        transmodal.FitConfig(objective="contrastive", text_column="label")
    with pytest.raises(DataError, match="--text-column caption applies to CSV data only"):
        transmodal.fit(_data(), objective="contrastive", text_column="caption", **FAST)
    with pytest.raises(ConfigError, match="drop it"):  # descriptions are for classes
        (tmp_path / "d.yaml").write_text("sine: a smooth wave\n")
        transmodal.fit(_data(), body=tiny_bodies["bert"], text_body=tiny_bodies["bert"],
                       objective="contrastive", descriptions=str(tmp_path / "d.yaml"), **FAST)
    with pytest.raises(ConfigError, match="captions and no labels"):
        transmodal.fit(_data(), body=tiny_bodies["bert"], **FAST)


@pytest.mark.parametrize("text_tune", ["frozen", "lora"])
def test_caption_run_resumes_bit_identically(tiny_bodies, tmp_path, monkeypatch, one_thread, text_tune):
    """A crash after the first checkpoint, then a resume: the same log and weights as a run
    that never stopped (the validation captions' embeddings use no random numbers)."""
    from transmodal.run import checkpoint

    opts = dict(body=tiny_bodies["bert"], text_body=tiny_bodies["bert"], objective="contrastive",
                text_tune=text_tune, checkpoint_every=2, device="cpu", seed=3,
                **{**FAST, "epochs": 4})
    transmodal.fit(_data(), out=tmp_path / "ref", **opts)
    real = checkpoint.Checkpointer.save

    def crash_on_second_save(self, **kw):
        if kw["epoch"] == 4:
            raise KeyboardInterrupt
        return real(self, **kw)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        transmodal.fit(_data(), out=tmp_path / "run", **opts)
    monkeypatch.undo()
    transmodal.fit(_data(), resume=tmp_path / "run", progress=False)

    def records(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert records(tmp_path / "run") == records(tmp_path / "ref") and len(records(tmp_path / "ref")) == 4
    weights = "model/model.safetensors"
    assert (tmp_path / "run" / weights).read_bytes() == (tmp_path / "ref" / weights).read_bytes()


def test_trained_text_tower_embeds_only_the_batchs_captions(tiny_bodies, monkeypatch):
    """--text-tune lora with 30 distinct captions: a training step embeds at most its batch's
    8 captions, and the loss equals the loss against every training caption."""
    from transmodal.models.text_tower import TextTower

    x, _, kind = captioned()
    amp = np.abs(x).max(1)
    text = np.array([f"a {k} wave peaking at {a:.3f}" for k, a in zip(kind, amp)])
    assert len(set(text[:30])) == 30
    sizes: list[int] = []
    original = TextTower.pooled

    def recording(self, texts):
        sizes.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(TextTower, "pooled", recording)
    run = transmodal.fit({"x_train": x[:30], "text_train": text[:30]}, body=tiny_bodies["bert"],
                         text_body=tiny_bodies["bert"], objective="contrastive", text_tune="lora",
                         **{**FAST, "epochs": 1})
    monkeypatch.undo()
    train_steps = -(-24 // 8)  # 24 training samples (6 validate), batches of 8
    assert sizes[:train_steps] and max(sizes[:train_steps]) <= 8
    assert sizes[train_steps] == 6  # then the validation captions, once
    model, task = run.model.eval(), run.preprocessor.target
    yb = torch.tensor([13, 0, 13, 7, 21, 5, 0, 2])  # training captions, two of them twice
    rows = [int(np.flatnonzero(text == run.model.head.class_texts[i][0])[0]) for i in yb.tolist()]
    xb = torch.from_numpy(run.preprocessor.transform_x(x[rows, None, :]))  # their samples
    with torch.no_grad():
        full = task.loss(model(xb), yb)
        with task.training_batch(model, yb) as local:
            batch = task.loss(model(xb), local)
    assert float(batch) == pytest.approx(float(full), rel=1e-5)
