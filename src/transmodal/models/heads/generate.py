"""Generate head (OFA): a text decoder writes the label's words, restricted to the label set.

    hidden (B, S, D) -> proj -> [TokenNorm] -> memory (B, S, Dd)   the body's output tokens
    decoder (models/decoders.py), with its own tokenizer:
      bert     BERT with causal self-attention and cross-attention to the memory (the bert2bert
               recipe of transformers' EncoderDecoderModel): self-attention, FFN, embeddings
               and tokenizer warm-started from --text-body (MiniLM offline); cross-attention
               (output projection zero at the start) and the LM head's transform are new. The
               default for encoder bodies.
      t5/bart  the pretrained decoder of a T5 or BART body (whose encoder is the body)
      gpt2     a decoder-only body as a prefix LM: the model hands the input's tokens to
               ``forward_prefix`` (``reads_input``) and the body reads them, then the answer

Every label is teacher-forced once per sample (K sequences of at most L tokens, batched as
B*K), and a prefix trie (``models/trie.py``) masks each step to the tokens that can still
lead to a label. The raw output is (B, K, 4) per sample and label:

    [..., 0]  log P(label) under the trie-constrained decoder (sum over its tokens; exp sums to 1)
    [..., 1]  teacher-forced cross-entropy per token of the label (the training loss)
    [..., 2]  cross-entropy per token against a uniform target over the allowed tokens (label
              smoothing spreads over valid tokens only, as in OFA's criterion)
    [..., 3]  the decoded answer, one-hot over the labels (all zero: a free answer that is no
              label); filled in eval mode only

so the task (``tasks/classification.py``) takes loss, decoding and probabilities from it.

Memory norm (``--head-norm batch``, the default; BERT decoder only): the memory is standardised
per feature over the batch's tokens before the new cross-attention reads it. Why (measured on
GunPoint, MiniLM, seed 0, 12 epochs = 36 steps): without it the body's output tokens share one
large mean direction, so the cross-attention's output projection learnt a label prior from that
common part, which flipped with every batch's label mix (the decision logit swung by +-1 on
every sample alike), while the part that depends on the input stayed ~0.003 (spread of the
logit over samples): single-task validation stayed at chance for 17 epochs. A T5/BART decoder
keeps its pretrained cross-attention and reads the encoder's states as they are.
Decoding (``spec.generate["decode"]``): ``constrained`` greedy over the trie, ``score`` the
best whole label (exact), ``free`` unconstrained greedy (invalid answers possible).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, DataError
from ..decoders import Prefix, stored_bert_decoder, warm_bert_decoder
from ..trie import LabelTrie
from . import register_head
from .pooled import TokenNorm

DECODES = ("constrained", "score", "free")


@register_head("generate")
class GenerateHead(nn.Module):
    @classmethod
    def build(cls, body, grid: tuple[int, ...], spec) -> "GenerateHead":
        gen = spec.generate
        if not gen or not gen.get("labels"):
            raise ConfigError("a generate head needs the label texts (fit --head generate)")
        if gen.get("decode") not in DECODES:
            raise ConfigError(f"unknown --decode {gen.get('decode')!r}; choose one of {', '.join(DECODES)}")
        stored = gen.get("label_ids") is not None  # a stored model: its weights load next
        decoder = body.answer_decoder(pretrained=not stored)  # the body's own, or None
        if decoder is None and stored:
            decoder = stored_bert_decoder(gen["decoder_config"])
        elif decoder is None:  # the bert2bert warm start from --text-body
            decoder = warm_bert_decoder(gen["text_body"])
            gen["decoder_config"] = decoder.config.to_dict()
        elif not stored:  # the body's own decoder: --text-body played no part, none is recorded
            gen["text_body"] = None
        if not stored:  # a new model: tokenise the labels with the decoder's own tokenizer
            gen.update(label_tokens(gen, decoder, body, spec))
            gen["memory_norm"] = memory_norm_of(decoder, getattr(spec, "head_norm", "none"))
        gen["decoder"] = decoder.kind
        trie = LabelTrie(gen["label_ids"], gen["start"], gen["end"], gen["pad"])
        # models stored before the memory norm have no key: they had none
        return cls(body.out_dim, decoder, trie, gen["decode"], gen.get("memory_norm", "none"))

    def __init__(self, dim: int, decoder: nn.Module, trie: LabelTrie, decode: str,
                 memory_norm: str = "none") -> None:
        super().__init__()
        width = decoder.width
        # a prefix LM reads the input itself (reads_input): no memory, no projection
        self.reads_input = width is None
        self.proj = nn.Linear(dim, width) if width is not None and dim != width else nn.Identity()
        # memory_norm "batch": see the module docstring (buffers only, no weights)
        self.norm = TokenNorm(width) if memory_norm == "batch" and width is not None else None
        self.decoder = decoder  # models/decoders.py: bert, t5/bart or gpt2 (prefix LM)
        self.trie = trie
        self.decode = decode
        steps = torch.arange(trie.inputs.shape[1])
        self.register_buffer("inputs", trie.inputs, persistent=False)  # (K, L)
        self.register_buffer("step_mask", steps[None] < trie.lengths[:, None], persistent=False)
        # steps past a label's end get one dummy allowed token (no NaN); step_mask zeroes them
        allowed = trie.allowed.clone()
        allowed[..., 0] |= ~self.step_mask
        self.register_buffer("kids", trie.children, persistent=False)  # (K, L, M)
        self.register_buffer("allowed", allowed, persistent=False)  # (K, L, M)
        self.register_buffer("position", trie.position, persistent=False)  # (K, L)
        self.register_buffer("lengths", trie.lengths.float(), persistent=False)  # (K,)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The decoder's pretrained weights train at the body's rate; the new parts (a BERT
        decoder's cross-attention and LM transform, the projection) at the head rate."""
        return self.decoder.pretrained_parameters()

    # ------------------------------------------------------------------ teacher forcing
    def label_logp(self, memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, S, Dd) (a prefix LM: ``Prefix``) -> per-step log-probs (B, K, L) of each
        label's own next token and mean log-prob over the allowed tokens (B, K, L), both
        renormalised over the trie's allowed tokens and zero past the label's end."""
        b = (memory.tokens if isinstance(memory, Prefix) else memory).shape[0]
        k = self.inputs.shape[0]
        mask = None if self.reads_input else self.step_mask.long().repeat(b, 1)
        h = self.decoder.states(self.inputs.repeat(b, 1), mask, memory, k)  # (B*K, L, Dd)
        h = h.view(b, k, *h.shape[1:])  # (B, K, L, Dd)
        # logits of the allowed tokens only: no (B*K, L, vocab) matrix
        w, bias = self.decoder.rows(self.kids, memory)  # (K, L, M, Dd), (K, L, M) | None
        logits = torch.einsum("bkld,klmd->bklm", h, w)  # (B, K, L, M)
        if bias is not None:
            logits = logits + bias
        logp = logits.float().masked_fill(~self.allowed, float("-inf")).log_softmax(-1)
        steps = self.step_mask.to(logp.dtype)
        own = logp.gather(-1, self.position[None, ..., None].expand(b, -1, -1, 1)).squeeze(-1)
        mean = logp.masked_fill(~self.allowed, 0.0).sum(-1) / self.allowed.sum(-1)
        return own * steps, mean * steps

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """(B, S, D) body states -> (B, K, 4): see the module docstring."""
        memory = self.proj(hidden)  # (B, S, Dd)
        return self.outputs(memory if self.norm is None else self.norm(memory))

    def forward_prefix(self, body: nn.Module, tokens: torch.Tensor, grid: tuple[int, ...]
                       ) -> torch.Tensor:
        """A prefix LM (``reads_input``): the input's tokens (B, S, D) -> (B, K, 4)."""
        return self.outputs(Prefix(body, tokens))

    def outputs(self, memory) -> torch.Tensor:
        own, mean = self.label_logp(memory)  # (B, K, L) each
        score = own.sum(-1)  # (B, K)
        pick = torch.zeros_like(score)
        if not self.training:
            pick = self.answer(memory, own, score)
        return torch.stack([score, -score / self.lengths, -mean.sum(-1) / self.lengths, pick], -1)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def answer(self, memory, own: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """One-hot (B, K) of the decoded label; an all-zero row is an invalid free answer."""
        if self.decode == "score":
            label = score.argmax(1)
        elif self.decode == "constrained":
            label = self.trie.greedy(own)
        else:
            label = self.trie.match(self.generate_free(memory))
        out = torch.zeros_like(score)
        hit = label >= 0
        out[hit.nonzero().squeeze(1), label[hit]] = 1.0
        return out

    @torch.no_grad()
    def generate_free(self, memory) -> torch.Tensor:
        """Unconstrained greedy decoding: (B, L) token ids, as many steps as the longest label
        needs (a longer answer is invalid anyway)."""
        b = (memory.tokens if isinstance(memory, Prefix) else memory).shape[0]
        device = self.inputs.device
        w, bias = self.decoder.rows(None, memory)  # (V, Dd), (V,) | None
        seq = torch.full((b, 1), self.trie.start, dtype=torch.long, device=device)
        for _ in range(self.inputs.shape[1]):
            h = self.decoder.states(seq, None, memory, 1)[:, -1]  # (B, Dd)
            logits = h @ w.T + (0.0 if bias is None else bias)  # (B, V)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
        return seq[:, 1:]


def memory_norm_of(decoder: nn.Module, head_norm: str) -> str:
    """``--head-norm`` for the memory of a new BERT decoder's cross-attention; "none" for a
    pretrained cross-attention (T5/BART) or a prefix LM (no memory)."""
    return head_norm if decoder.kind == "bert" else "none"


def label_tokens(gen: dict[str, Any], decoder: nn.Module, body: Any, spec: Any) -> dict[str, Any]:
    """``tokenise_labels`` with the tokenizer that goes with ``decoder`` (the --text-body's for a
    BERT decoder, else the body's own) and the room left for an answer."""
    bert = decoder.kind == "bert"
    source = gen["text_body"] if bert else body.source
    name = f"--text-body {gen['text_body']!r}" if bert else f"--body {spec.body!r}"
    answer = decoder.max_answer
    if decoder.width is None:  # a prefix LM: the input's tokens come first
        answer -= min(spec.max_tokens, body.max_tokens)
    return tokenise_labels(source, name, gen["labels"], decoder, answer)


def tokenise_labels(source: str, name: str, texts: list[str], decoder: nn.Module,
                    max_positions: int) -> dict[str, Any]:
    """Token ids of every label text (no special tokens) and the start/end/pad ids, with the
    tokenizer of the model folder or hub id ``source`` (``name``: the option that gave it)."""
    from ..bodies.hf import resolve_body_path
    from ..text_tower import load_tokenizer

    tok = load_tokenizer(resolve_body_path(source))
    start, end, pad = decoder.special_ids(tok, name)
    space = " " if byte_level(tok) else ""
    ids = [tok(space + t, add_special_tokens=False)["input_ids"] if t.strip() else [] for t in texts]
    for text, i in zip(texts, ids):
        if not i:
            raise DataError(f"the label text {text!r} tokenises to nothing; give every label words "
                            "(--label-texts FILE.yaml maps labels to texts)")
        if len(i) + 1 > max_positions:
            raise DataError(f"the label text {text[:40]!r} is {len(i)} tokens long; the decoder "
                            f"takes at most {max_positions - 1}: shorten it")
    seen: dict[tuple[int, ...], str] = {}
    for text, i in zip(texts, ids):
        if tuple(i) in seen:
            raise DataError(f"the label texts {seen[tuple(i)]!r} and {text!r} tokenise to the same "
                            "tokens; give every label its own words (--label-texts)")
        seen[tuple(i)] = text
    return {"label_ids": ids, "start": int(start), "end": int(end), "pad": int(pad)}


def byte_level(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is a byte-level BPE (GPT-2, BART, RoBERTa). Why: there a word inside
    a text is its own token with the leading space ("Ġwinter"), the form pretraining saw most;
    without the space a label often splits into rarer pieces. WordPiece and SentencePiece
    tokenizers mark word starts themselves, so their labels are tokenised as written."""
    from tokenizers import pre_tokenizers

    pre = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    parts = list(pre) if isinstance(pre, pre_tokenizers.Sequence) else [pre]
    return any(isinstance(p, pre_tokenizers.ByteLevel) for p in parts)
