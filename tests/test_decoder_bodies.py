"""GPT-2, T5 and BART bodies (issue 12 part 5): the linear head on each, and --head generate with
each one's own decoder (GPT-2 as a prefix LM; T5/BART decoders), checked against the
transformers models they come from.

Tiny random configs, saved with a tokenizer built offline: a ``PreTrainedTokenizerFast`` over a
WordLevel vocabulary of a few words, whose special tokens sit where each family's config expects
them (GPT-2: one <|endoftext|>; T5: <pad>=0, </s>=1; BART: <s>=0, <pad>=1, </s>=2).
"""

import json

import numpy as np
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.errors import ConfigError
from transmodal.models.decoders import Prefix
from transmodal.models.model import ModelSpec, build_model

from test_generate import words

FAST = dict(batch_size=8, max_tokens=16, progress=False, baselines="none")
NAMES = ("gpt2", "t5", "bart")
WORDS = "sine square saw tooth wave a b c".split()
SPECIALS = {"gpt2": ["<|endoftext|>", "<unk>"], "t5": ["<pad>", "</s>", "<unk>"],
            "bart": ["<s>", "<pad>", "</s>", "<unk>"]}


def word_tokenizer(specials: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    named = {"<|endoftext|>": ("bos_token", "eos_token"), "<pad>": ("pad_token",),
             "</s>": ("eos_token",), "<s>": ("bos_token",), "<unk>": ("unk_token",)}
    kwargs = {role: t for t in specials for role in named[t]}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs), len(vocab)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny GPT-2, T5 and BART model folders (each with its tokenizer)."""
    from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2Model,
                              T5Config, T5ForConditionalGeneration)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("decoder-bodies")
    models = {
        "gpt2": lambda v: GPT2Model(GPT2Config(vocab_size=v, n_layer=2, n_embd=32, n_head=2,
                                               n_positions=64, bos_token_id=0, eos_token_id=0)),
        "t5": lambda v: T5ForConditionalGeneration(T5Config(
            vocab_size=v, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
        "bart": lambda v: BartForConditionalGeneration(BartConfig(
            vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
            decoder_ffn_dim=64, max_position_embeddings=64, bos_token_id=0, pad_token_id=1,
            eos_token_id=2, decoder_start_token_id=2)),
    }
    out = {}
    for name, make in models.items():
        tok, size = word_tokenizer(SPECIALS[name])
        make(size).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_linear_head_fit_and_round_trip(folders, name, tmp_path):
    x, y = words(24)
    run = transmodal.fit((x[:18], y[:18]), out=tmp_path / "run", body=folders[name], epochs=1,
                         test_data=(x[18:], y[18:]), **FAST)
    assert run.model.body.family == name
    assert not any(k.startswith("head.decoder") for k in run.model.state_dict())  # encoder only
    loaded = transmodal.load(tmp_path / "run")
    assert np.array_equal(loaded.predict_proba(x[18:]), run.predict_proba(x[18:]))
    assert set(loaded.predict(x)) <= set(y)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forcing_matches_the_transformers_model(folders, name):
    """The generate head's masked teacher forcing equals the original transformers model's
    next-token logits (GPT2LMHeadModel over input + answer; T5/BART's own decoder and LM head
    over our body's states), renormalised over the trie's allowed tokens."""
    import transformers

    torch.manual_seed(0)
    labels = ["sine", "sine wave", "square wave", "saw tooth wave"]
    spec = ModelSpec(task="classification", n_outputs=4, in_channels=1, spatial=[24],
                     body=folders[name], max_tokens=8, head="generate", head_norm="batch",
                     generate={"text_body": "minilm", "labels": labels, "decode": "constrained"})
    model = build_model(spec).eval()
    head, trie = model.head, model.head.trie
    gen = spec.generate
    assert gen["decoder"] == name
    # the body's own decoder: no --text-body is recorded, and its pretrained cross-attention
    # reads the encoder's states as they are (no memory norm even with --head-norm batch)
    assert gen["text_body"] is None and gen["memory_norm"] == "none" and head.norm is None
    if name == "gpt2":  # one special token: separator, end and pad
        assert gen["start"] == gen["end"] == gen["pad"] == 0 and head.reads_input
        full = transformers.GPT2LMHeadModel.from_pretrained(folders[name]).eval()
    else:
        assert (gen["start"], gen["end"], gen["pad"]) == ((0, 1, 0) if name == "t5" else (2, 2, 1))
        cls = transformers.T5ForConditionalGeneration if name == "t5" else \
            transformers.BartForConditionalGeneration
        full = cls.from_pretrained(folders[name]).eval()
    x = torch.randn(2, 1, 24)
    with torch.no_grad():
        tokens = model.embedder(x)  # (B, S, D)
        hidden, _ = model.body.encode(tokens, model.embedder.grid)
        memory = Prefix(model.body, tokens) if head.reads_input else head.proj(hidden)
        own, _ = head.label_logp(memory)  # (B, K, L)
        for k, label in enumerate(trie.labels):
            seq = label + (trie.end,)
            ids = torch.tensor([[trie.start, *seq[:-1]]]).expand(2, -1)  # (B, L)
            if name == "gpt2":
                embeds = torch.cat([tokens, full.transformer.wte(ids)], 1)
                logits = full(inputs_embeds=embeds).logits[:, tokens.shape[1]:]
            else:
                logits = full(encoder_outputs=(hidden,), decoder_input_ids=ids).logits
            for t in range(len(seq)):
                allowed = trie.next_tokens(seq[:t])
                ref = logits[:, t, allowed].log_softmax(-1)[:, allowed.index(seq[t])]
                assert torch.allclose(own[:, k, t], ref, atol=1e-4)
        raw = model(x)  # (B, K, 4)
    assert torch.allclose(raw[..., 0].exp().sum(1), torch.ones(2), atol=1e-5)


@pytest.fixture(scope="module")
def generate_runs(folders, tmp_path_factory):
    x, y = words(36)
    out = {}
    for name in NAMES:
        folder = tmp_path_factory.mktemp(f"gen-{name}") / "run"
        run = transmodal.fit((x[:27], y[:27]), out=folder, body=folders[name], head="generate",
                             epochs=4, head_lr=3e-3, lr=3e-3, test_data=(x[27:], y[27:]), **FAST)
        out[name] = (run, folder)
    return out, x[27:], y[27:]


@pytest.mark.parametrize("name", NAMES)
def test_generate_trains_round_trips_and_only_emits_labels(generate_runs, name):
    runs, x, y = generate_runs
    run, folder = runs[name]
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if r["stage"] == "refine"]
    assert min(losses[1:]) < losses[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["test"]["invalid_rate"] == 0.0  # constrained: always a label
    assert set(run.predict(x)) <= set(y)
    assert run.model.spec.generate["decoder"] == name
    loaded = transmodal.load(folder)
    assert np.array_equal(loaded.predict(x), run.predict(x))
    assert np.array_equal(loaded.predict_proba(x), run.predict_proba(x))
    keys = set(loaded.model.state_dict())
    if name == "gpt2":  # the body is the decoder: the head has no weights
        assert not any(k.startswith("head.") for k in keys)
    else:  # the model's own decoder, not a BERT one
        assert any(k.startswith("head.decoder.decoder.") for k in keys)
        assert not any(".crossattention." in k for k in keys)


def test_gpt2_free_decoding_counts_invalid_answers(folders):
    x, y = words(24)
    run = transmodal.fit((x, y), body=folders["gpt2"], head="generate", decode="free", epochs=1,
                         test_data=(x[:9], y[:9]), **FAST)
    pred = run.predict(x[:9])
    valid = [p is not None for p in pred]
    assert run.summary["metrics"]["test"]["invalid_rate"] == pytest.approx(1 - np.mean(valid))
    assert {p for p in pred if p is not None} <= set(y)


def test_decoder_only_body_refuses_a_dense_head(folders, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 24)).astype(np.float32)
    mask = (x > 0).astype(np.int64)  # (N, L) integers: a dense task
    with pytest.raises(ConfigError, match="decoder-only .causal attention"):
        transmodal.fit((x, mask), body=folders["gpt2"], epochs=1, **FAST)
    np.savez(tmp_path / "d.npz", x=x, y=mask)
    out = tmp_path / "run"
    assert main(["fit", "--data", str(tmp_path / "d.npz"), "--body", folders["gpt2"],
                 "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    assert not (out / "model").exists()


@pytest.mark.parametrize("name,tune", [("gpt2", "lora"), ("t5", "layernorm"), ("bart", "hybrid:1")])
def test_tuning_strategies(folders, name, tune, tmp_path, recwarn):
    """GPT-2's Conv1D projections take LoRA adapters; T5's RMS norms count as norm layers."""
    x, y = words(24)
    run = transmodal.fit((x, y), out=tmp_path / "run", body=folders[name], tune=tune, epochs=1,
                         **FAST)
    trainable = {n for n, p in run.model.body.named_parameters() if p.requires_grad}
    assert trainable
    if name == "gpt2":
        assert all(".lora_" in n for n in trainable)
        assert not [w for w in recwarn if "fan_in_fan_out" in str(w.message)]
    if name == "t5":
        assert all("layer_norm" in n for n in trainable)
    assert np.array_equal(transmodal.load(tmp_path / "run").predict_proba(x), run.predict_proba(x))


def test_byte_level_labels_are_tokenised_in_their_in_text_form(tmp_path):
    """Byte-level BPE (GPT-2, BART): a label gets its leading space ("Ġwinter", the form a word
    has inside a text); a blank label still tokenises to nothing (one clear error)."""
    from types import SimpleNamespace

    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from transmodal.errors import DataError
    from transmodal.models.heads.generate import tokenise_labels

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a winter day and a summer night"] * 20, vocab_size=300,
                            min_frequency=1, show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    tok.save_pretrained(tmp_path / "bpe")
    decoder = SimpleNamespace(special_ids=lambda t, name: (0, 0, 0))  # the start/end ids only
    got = tokenise_labels(str(tmp_path / "bpe"), "--body", ["winter", "summer night"], decoder, 16)
    assert got["label_ids"] == [tok(" winter")["input_ids"], tok(" summer night")["input_ids"]]
    assert tok.convert_ids_to_tokens(got["label_ids"][0]) == ["Ġwinter"]
    assert got["label_ids"][0] != tok("winter")["input_ids"]  # without the space: another token
    with pytest.raises(DataError, match="tokenises to nothing"):
        tokenise_labels(str(tmp_path / "bpe"), "--body", ["winter", "  "], decoder, 16)
