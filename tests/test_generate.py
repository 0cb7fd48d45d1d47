"""--head generate (OFA, labels as text): the label trie, the decoder's masked teacher forcing
against a step-by-step reference, training, save/load and decoding modes. Bad inputs are rows of
tests/test_bad_inputs.py."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transmodal
from transmodal.models.heads.generate import GenerateHead
from transmodal.models.model import ModelSpec, build_model
from transmodal.models.trie import LabelTrie

START, END, PAD, VOCAB = 1, 2, 0, 9
FAST = dict(batch_size=8, max_tokens=16, progress=False, baselines="none")

# label sets over a 6-token alphabet: short sequences, so shared prefixes and labels that are
# prefixes of others are frequent
LABELS = st.lists(st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=4).map(tuple),
                  min_size=2, max_size=8, unique=True)


def prefix_logits(prefix: tuple, seed: int, favour: tuple | None = None) -> torch.Tensor:
    """A made-up decoder: logits over the vocabulary that depend on the prefix only (as a
    causal decoder's do). ``favour``: a label whose path gets +20 (it dominates)."""
    g = torch.Generator().manual_seed(hash((seed, prefix)) % (2 ** 31))
    out = torch.randn(VOCAB, generator=g) * 3
    if favour is not None:
        path = favour + (END,)
        if prefix == path[: len(prefix)] and len(prefix) < len(path):
            out[path[len(prefix)]] += 20.0
    return out


def teacher_forced(trie: LabelTrie, seed: int, favour=None) -> torch.Tensor:
    """(1, K, L) masked log-prob of each label's own next token, as the head computes it."""
    k, length = trie.targets.shape
    out = torch.zeros(1, k, length)
    for i, label in enumerate(trie.labels):
        full = label + (END,)
        for t, tok in enumerate(full):
            allowed = trie.next_tokens(full[:t])
            logp = prefix_logits(full[:t], seed, favour)[allowed].log_softmax(0)
            out[0, i, t] = logp[allowed.index(tok)]
    return out


def greedy_reference(trie: LabelTrie, seed: int, favour=None) -> tuple:
    """Constrained greedy decoding step by step: the best allowed token until the end token."""
    seq: tuple = ()
    while not seq or seq[-1] != END:
        allowed = trie.next_tokens(seq)
        seq += (allowed[int(prefix_logits(seq, seed, favour)[allowed].argmax())],)
    return seq[:-1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=LABELS, seed=st.integers(0, 10 ** 6))
def test_constrained_greedy_never_leaves_the_label_set(labels, seed):
    trie = LabelTrie(labels, START, END, PAD)
    logp = teacher_forced(trie, seed)
    picked = int(trie.greedy(logp)[0])
    assert 0 <= picked < len(labels)
    assert trie.labels[picked] == greedy_reference(trie, seed)  # the walk is the real decoder
    # the trie-constrained distribution is a proper one over the labels
    assert float(logp.sum(-1).exp().sum()) == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=LABELS, seed=st.integers(0, 10 ** 6), data=st.data())
def test_greedy_equals_score_when_one_label_dominates(labels, seed, data):
    trie = LabelTrie(labels, START, END, PAD)
    j = data.draw(st.integers(0, len(labels) - 1))
    logp = teacher_forced(trie, seed, favour=trie.labels[j])
    assert int(trie.greedy(logp)[0]) == j == int(logp.sum(-1).argmax(1)[0])


@settings(max_examples=40, deadline=None)
@given(labels=LABELS, junk=st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=5))
def test_free_answers_match_exactly_one_label_or_none(labels, junk):
    trie = LabelTrie(labels, START, END, PAD)
    for i, label in enumerate(trie.labels):
        answer = torch.tensor([list(label) + [END] + junk])  # tokens after the end are ignored
        assert int(trie.match(answer)[0]) == i
    answer = tuple(junk)
    expected = trie.labels.index(answer) if answer in trie.labels else -1
    assert int(trie.match(torch.tensor([list(answer) + [END]]))[0]) == expected
    if answer not in trie.labels:  # an answer that never ends is invalid too
        assert int(trie.match(torch.tensor([list(answer)]))[0]) == -1


def test_trie_branches_on_the_end_token():
    trie = LabelTrie([(5,), (5, 6), (5, 6, 7), (8, 6)], START, END, PAD)
    assert trie.next_tokens(()) == [5, 8]
    assert trie.next_tokens((5,)) == [END, 6]
    assert trie.next_tokens((5, 6)) == [END, 7]
    assert trie.next_tokens((8,)) == [6]  # a single child: the mask makes this step certain
    assert trie.inputs[2].tolist() == [START, 5, 6, 7] and trie.targets[0].tolist() == [5, END, -1, -1]


# ----------------------------------------------------------------------------- the head


@pytest.fixture(scope="module")
def head_model(tiny_bodies):
    """A tiny body with a generate head over labels that share prefixes and span tokens."""
    torch.manual_seed(0)
    labels = ["sine", "sine wave", "square wave", "saw tooth wave"]
    spec = ModelSpec(task="classification", n_outputs=len(labels), in_channels=1, spatial=[24],
                     body=tiny_bodies["bert"], max_tokens=8, head="generate",
                     generate={"text_body": tiny_bodies["bert"], "labels": labels,
                               "decode": "constrained"})
    return build_model(spec).eval()


@torch.no_grad()
def test_masked_teacher_forcing_matches_a_step_by_step_decoder(head_model):
    head: GenerateHead = head_model.head
    trie = head.trie
    x = torch.randn(3, 1, 24)
    hidden, grid = head_model.features(x)
    memory = head.proj(hidden)
    own, _ = head.label_logp(memory)  # (B, K, L)
    for b in range(3):
        mem = memory[b: b + 1]
        for k, label in enumerate(trie.labels):  # the full-vocabulary decoder, masked by hand
            full = label + (trie.end,)
            for t, tok in enumerate(full):
                ids = torch.tensor([[trie.start, *full[:t]]])
                logits = head.decoder(input_ids=ids, encoder_hidden_states=mem).logits[0, -1]
                allowed = trie.next_tokens(full[:t])
                ref = logits[allowed].log_softmax(0)[allowed.index(tok)]
                assert float(own[b, k, t]) == pytest.approx(float(ref), abs=1e-4)
        # greedy constrained decoding with the real decoder, one token at a time
        seq: tuple = ()
        while not seq or seq[-1] != trie.end:
            ids = torch.tensor([[trie.start, *seq]])
            logits = head.decoder(input_ids=ids, encoder_hidden_states=mem).logits[0, -1]
            allowed = trie.next_tokens(seq)
            seq += (allowed[int(logits[allowed].argmax())],)
        assert trie.labels[int(trie.greedy(own[b: b + 1])[0])] == seq[:-1]
    raw = head_model(x)  # (B, K, 4)
    assert raw.shape == (3, 4, 4)
    assert torch.allclose(raw[..., 0].exp().sum(1), torch.ones(3), atol=1e-5)
    assert torch.equal(raw[..., 3].sum(1), torch.ones(3))  # one constrained answer each


@torch.no_grad()
def test_cross_attention_starts_as_a_no_op(head_model):
    """The new cross-attention's output projection starts at zero: the untrained decoder is the
    pretrained LM whatever the input, and gradients reach that projection first."""
    head: GenerateHead = head_model.head
    outs = [layer.crossattention.output.dense for layer in head.decoder.bert.encoder.layer]
    assert all(not o.weight.any() and not o.bias.any() for o in outs)
    a, b = head.label_logp(torch.randn(2, 5, 32))[0], head.label_logp(3 * torch.randn(2, 5, 32))[0]
    assert torch.allclose(a, b, atol=1e-6)
    assert all(o.weight.requires_grad for o in outs)


# ----------------------------------------------------------------------------- fits


def words(n=48, length=24, seed=0):
    """Three classes of series whose names share words ('wave') and span several tokens."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, length)
    k = np.arange(n) % 3
    shapes = np.stack([np.sin(t), np.sign(np.sin(t)), (t % np.pi) / np.pi * 2 - 1])
    x = (shapes[k] + 0.2 * rng.normal(size=(n, length))).astype(np.float32)
    return x, np.array(["sine wave", "square wave", "saw tooth wave"])[k]


@pytest.fixture(scope="module")
def fitted(tiny_bodies, tmp_path_factory):
    x, y = words()
    out = tmp_path_factory.mktemp("gen") / "run"
    run = transmodal.fit((x[:36], y[:36]), out=out, body=tiny_bodies["bert"],
                         text_body=tiny_bodies["bert"], head="generate", epochs=12,
                         head_lr=3e-3, label_smoothing=0.1, test_data=(x[36:], y[36:]), **FAST)
    return run, out, x[36:], y[36:]


def test_training_reduces_the_loss_and_scores_invalid_rate(fitted):
    run, out, x, y = fitted
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if r["stage"] == "refine"]
    # per token, and most tokens are certain under the trie mask: the loss moves little
    assert losses[-1] < 0.9 * losses[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["test"]["invalid_rate"] == 0.0  # constrained: always a label
    assert summary["metrics"]["test"]["accuracy"] >= 2 / 3  # 3 classes; 1.0 when written
    assert set(run.predict(x)) <= {"sine wave", "square wave", "saw tooth wave"}


def test_save_load_round_trip_gives_identical_predictions(fitted):
    run, out, x, _ = fitted
    loaded = transmodal.load(out)
    assert np.array_equal(loaded.predict(x), run.predict(x))
    p = loaded.predict_proba(x)
    assert np.array_equal(p, run.predict_proba(x))
    assert np.allclose(p.sum(1), 1.0, atol=1e-5)
    # the tied output layer is stored once, as the word embeddings
    from safetensors import safe_open

    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "head.decoder.bert.embeddings.word_embeddings.weight" in keys
    assert "head.decoder.cls.predictions.decoder.weight" not in keys


def test_predict_and_evaluate_cli(fitted, tmp_path):
    from transmodal.cli import main

    run, out, x, y = fitted
    np.savez(tmp_path / "test.npz", x=x, y=y)
    assert main(["predict", str(out), "--data", str(tmp_path / "test.npz"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    import pandas as pd

    assert pd.read_csv(tmp_path / "p.csv")["prediction"].tolist() == run.predict(x).tolist()
    assert main(["evaluate", str(out), "--data", str(tmp_path / "test.npz")]) == 0


@pytest.mark.parametrize("decode", ["score", "free"])
def test_score_and_free_decoding(tiny_bodies, decode):
    x, y = words(24)
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], text_body=tiny_bodies["bert"],
                         head="generate", decode=decode, epochs=2, test_data=(x[:9], y[:9]), **FAST)
    test = run.summary["metrics"]["test"]
    pred = run.predict(x[:9])
    valid = [p is not None for p in pred]
    assert test["invalid_rate"] == pytest.approx(1 - np.mean(valid))
    assert {p for p in pred if p is not None} <= set(y)
    if decode == "score":  # exact: the most probable whole label
        assert test["invalid_rate"] == 0.0
        names = np.asarray(run.classes)
        assert list(names[run.predict_proba(x[:9]).argmax(1)]) == list(pred)


def test_integer_codes_with_label_texts(tiny_bodies, tmp_path):
    x, y = words(24)
    codes = np.unique(y, return_inverse=True)[1]  # 0 saw tooth wave, 1 sine wave, 2 square wave
    (tmp_path / "texts.yaml").write_text("0: saw tooth\n1: sine\n2: square\n")
    run = transmodal.fit((x, codes), body=tiny_bodies["bert"], text_body=tiny_bodies["bert"],
                         head="generate", label_texts=str(tmp_path / "texts.yaml"), epochs=1,
                         **FAST)
    assert run.model.spec.generate["labels"] == ["saw tooth", "sine", "square"]
    assert run.predict(x[:4]).dtype.kind == "i"  # the codes come back, not the texts


def test_real_minilm_decoder_on_a_handful_of_samples(tiny_bodies, tmp_path):
    """The offline default decoder: MiniLM's own weights, vocabulary and tokenizer."""
    x, y = words(12)
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], head="generate",
                         epochs=1, **FAST)
    head = run.model.head
    assert head.decoder.config.hidden_size == 384 and head.decoder.config.is_decoder
    from transmodal.models.bodies import load_body

    minilm = load_body("minilm").model.state_dict()
    mine = head.decoder.bert.state_dict()
    # warm start: the self-attention of the first block was MiniLM's (it trained one epoch)
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.corrcoef(torch.stack([mine[key].flatten(), minilm[key].flatten()]))[0, 1] > 0.99
    assert sum(p.numel() for p in head.parameters()) > 20_000_000
    loaded = transmodal.load(tmp_path / "run")
    assert np.array_equal(loaded.predict(x), run.predict(x))


def test_memory_is_standardised_before_the_new_cross_attention(tiny_bodies):
    """--head-norm batch (the default): the body's tokens are standardised per feature over the
    batch before the new cross-attention reads them, so the part every input shares cannot
    stand in for a label prior (issue 12: without it MiniLM on GunPoint stayed at chance). A
    model stored before this norm (no ``memory_norm`` in its spec) is rebuilt without it."""
    from transmodal.models.heads.pooled import TokenNorm

    torch.manual_seed(0)
    spec = ModelSpec(task="classification", n_outputs=2, in_channels=1, spatial=[24],
                     body=tiny_bodies["bert"], max_tokens=8, head="generate", head_norm="batch",
                     generate={"text_body": tiny_bodies["bert"], "labels": ["sine", "square"],
                               "decode": "constrained"})
    model = build_model(spec).train()
    assert isinstance(model.head.norm, TokenNorm) and spec.generate["memory_norm"] == "batch"
    seen = {}
    hook = model.head.decoder.bert.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(memory=kwargs["encoder_hidden_states"]),
        with_kwargs=True)
    model(torch.randn(6, 1, 24) + 5.0)  # inputs with a large common part
    hook.remove()
    memory = seen["memory"]  # (B*K, S, D): each sample's memory once per label
    assert memory.shape[0] == 6 * 2
    flat = memory.reshape(-1, memory.shape[-1])
    assert flat.mean(0).abs().max() < 1e-4  # no common part left, in any feature
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(flat.shape[1]), atol=1e-2)
    # stored before the norm existed: no key, no norm (its weights have no statistics)
    old = ModelSpec.from_dict(spec.to_dict())
    old.generate = {k: v for k, v in old.generate.items() if k != "memory_norm"}
    assert build_model(old, rebuild=True).head.norm is None
    # --head-norm none keeps the memory as the body wrote it
    plain = ModelSpec.from_dict({**spec.to_dict(), "head_norm": "none"})
    plain.generate = {k: v for k, v in plain.generate.items()
                      if k not in ("label_ids", "memory_norm")}
    assert build_model(plain).head.norm is None
