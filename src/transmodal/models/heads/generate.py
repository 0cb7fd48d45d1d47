"""Generate head (OFA): a text decoder writes the label's words, restricted to the label set.

    hidden (B, S, D) -> proj -> memory (B, S, Dd)       the body's output tokens
    decoder: BERT with causal self-attention and cross-attention to the memory (the bert2bert
             recipe of transformers' EncoderDecoderModel): self-attention, FFN, embeddings and
             tokenizer warm-started from a pretrained text model (--text-body, MiniLM offline);
             cross-attention and the LM head's transform are new.

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
Decoding (``spec.generate["decode"]``): ``constrained`` greedy over the trie, ``score`` the
best whole label (exact), ``free`` unconstrained greedy (invalid answers possible).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, DataError
from ..trie import LabelTrie
from . import register_head

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
        if gen.get("decoder_config") is None:  # a new model: warm start, tokenise the labels
            decoder = warm_decoder(gen["text_body"])
            gen.update(tokenise_labels(gen["text_body"], gen["labels"],
                                       decoder.config.max_position_embeddings))
            gen["decoder_config"] = decoder.config.to_dict()
        else:  # a stored model: the architecture only, its weights load next
            from transformers import BertConfig, BertLMHeadModel

            decoder = BertLMHeadModel(BertConfig.from_dict(gen["decoder_config"]))
        trie = LabelTrie(gen["label_ids"], gen["start"], gen["end"], gen["pad"])
        return cls(body.out_dim, decoder, trie, gen["decode"])

    def __init__(self, dim: int, decoder: nn.Module, trie: LabelTrie, decode: str) -> None:
        super().__init__()
        width = decoder.config.hidden_size
        self.proj = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.decoder = decoder  # transformers BertLMHeadModel (is_decoder, add_cross_attention)
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
        """The decoder's warm-started weights train at the body's rate; cross-attention and the
        LM head's transform and bias are new (head rate)."""
        return [p for n, p in self.decoder.named_parameters()
                if "crossattention" not in n and not n.startswith("cls.")]

    # ------------------------------------------------------------------ teacher forcing
    def label_logp(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, S, Dd) -> per-step log-probs (B, K, L) of each label's own next token and
        mean log-prob over the allowed tokens (B, K, L), both renormalised over the trie's
        allowed tokens and zero past the label's end."""
        b, k = memory.shape[0], self.inputs.shape[0]
        mask = self.step_mask.long()
        h = self.decoder.bert(input_ids=self.inputs.repeat(b, 1), attention_mask=mask.repeat(b, 1),
                              encoder_hidden_states=memory.repeat_interleave(k, 0)
                              ).last_hidden_state  # (B*K, L, Dd)
        lm = self.decoder.cls.predictions
        h = lm.transform(h).view(b, k, *h.shape[1:])  # (B, K, L, Dd)
        # logits of the allowed tokens only: no (B*K, L, vocab) matrix
        w, bias = lm.decoder.weight[self.kids], lm.decoder.bias[self.kids]  # (K, L, M, Dd)
        logits = torch.einsum("bkld,klmd->bklm", h, w) + bias  # (B, K, L, M)
        logp = logits.float().masked_fill(~self.allowed, float("-inf")).log_softmax(-1)
        steps = self.step_mask.to(logp.dtype)
        own = logp.gather(-1, self.position[None, ..., None].expand(b, -1, -1, 1)).squeeze(-1)
        mean = logp.masked_fill(~self.allowed, 0.0).sum(-1) / self.allowed.sum(-1)
        return own * steps, mean * steps

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """(B, S, D) -> (B, K, 4): see the module docstring."""
        memory = self.proj(hidden)  # (B, S, Dd)
        own, mean = self.label_logp(memory)  # (B, K, L) each
        score = own.sum(-1)  # (B, K)
        pick = torch.zeros_like(score)
        if not self.training:
            pick = self.answer(memory, own, score)
        return torch.stack([score, -score / self.lengths, -mean.sum(-1) / self.lengths, pick], -1)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def answer(self, memory: torch.Tensor, own: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
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
    def generate_free(self, memory: torch.Tensor) -> torch.Tensor:
        """Unconstrained greedy decoding: (B, L) token ids, as many steps as the longest label
        needs (a longer answer is invalid anyway)."""
        b = memory.shape[0]
        seq = torch.full((b, 1), self.trie.start, dtype=torch.long, device=memory.device)
        for _ in range(self.inputs.shape[1]):
            logits = self.decoder(input_ids=seq, encoder_hidden_states=memory).logits[:, -1]  # (B, V)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
        return seq[:, 1:]


def warm_decoder(text_body: str) -> nn.Module:
    """A BERT decoder with cross-attention, its self-attention, FFN and embeddings loaded from
    the pretrained text model ``text_body`` (loaded through the one text-encoder path)."""
    from transformers import BertConfig, BertLMHeadModel

    from ..text_tower import load_text_encoder

    encoder = load_text_encoder(text_body).model
    if encoder.config.model_type != "bert":
        raise ConfigError(f"--head generate warm-starts its decoder from a BERT-type text model; "
                          f"--text-body {text_body!r} is {encoder.config.model_type!r} (use minilm "
                          "or a BERT model folder)")
    config = BertConfig.from_dict({**encoder.config.to_dict(), "is_decoder": True,
                                   "add_cross_attention": True})
    decoder = BertLMHeadModel(config)
    missing, unexpected = decoder.bert.load_state_dict(encoder.state_dict(), strict=False)
    new = [k for k in missing if "crossattention" not in k]
    if unexpected or new:
        raise ConfigError(f"--text-body {text_body!r}: its weights do not fit a BERT decoder "
                          f"({(unexpected or new)[0]}); use minilm or a BERT model folder")
    return decoder


def tokenise_labels(text_body: str, texts: list[str], max_positions: int) -> dict[str, Any]:
    """Token ids of every label text (no special tokens) and the start/end/pad ids."""
    from ..bodies.hf import resolve_body_path
    from ..text_tower import load_tokenizer

    tok = load_tokenizer(resolve_body_path(text_body))
    start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if start is None or end is None:
        raise ConfigError(f"the tokenizer of --text-body {text_body!r} has no start/end tokens")
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
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
    pad = tok.pad_token_id if tok.pad_token_id is not None else end
    return {"label_ids": ids, "start": int(start), "end": int(end), "pad": int(pad)}
