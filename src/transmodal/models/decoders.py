"""Text decoders of the generate head (OFA): the part that writes a label's tokens.

Three kinds, one small interface, so ``heads/generate.py`` never looks inside a decoder:

    bert     a BERT turned decoder (causal self-attention + new cross-attention), warm-started
             from ``--text-body`` (MiniLM offline): the bert2bert recipe
    t5/bart  the pretrained decoder of an encoder-decoder body (the body is its encoder)
    gpt2     a decoder-only body used as a prefix language model: the body reads the input's
             tokens and then the answer's, and its own (tied) LM head scores the next token

    states(inputs (B*k, L), mask, memory, k) -> (B*k, L, Dd): k answers per sample, teacher-forced
    rows(ids, memory) -> (weight (..., Dd), bias (...) | None): the output layer's rows for
                  token ids (``ids=None``: the whole vocabulary)
    special_ids(tokenizer) -> (start, end, pad) of the answer sequences

The output layer is tied to the word embeddings in every kind, so the trie's allowed tokens are
scored against the real pretrained vocabulary. They train at the body's rate (bert, t5/bart);
GPT-2's stay frozen, as the body's bypassed input layer (freezing the BERT decoder's did not
help on GunPoint, README "Labels as text").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class Prefix:
    """The memory of a prefix LM: the body and the input's tokens (B, S, D) it reads first."""

    body: nn.Module
    tokens: torch.Tensor


def _special(tokenizer, start: int | None, end: int | None, pad: int | None,
             name: str) -> tuple[int, int, int]:
    if start is None or end is None:
        raise ConfigError(f"the tokenizer of {name} has no start/end tokens; use a model folder "
                          "whose tokenizer defines them")
    return int(start), int(end), int(end if pad is None else pad)


@cache
def bert_decoder_class() -> type:
    """``BertDecoder``, defined on first use (transformers is imported lazily)."""
    from transformers import BertLMHeadModel

    class BertDecoder(BertLMHeadModel):
        """A BERT LM-head model with cross-attention (state-dict keys as ``BertLMHeadModel``'s)."""

        kind = "bert"

        @property
        def width(self) -> int:
            return int(self.config.hidden_size)

        @property
        def max_answer(self) -> int:
            return int(self.config.max_position_embeddings)

        def states(self, inputs: torch.Tensor, mask: torch.Tensor | None, memory: torch.Tensor,
                   k: int) -> torch.Tensor:
            """inputs (B*k, L), memory (B, S, Dd) shared by k answers -> (B*k, L, Dd)."""
            h = self.bert(input_ids=inputs, attention_mask=mask,
                          encoder_hidden_states=memory.repeat_interleave(k, 0)).last_hidden_state
            return self.cls.predictions.transform(h)

        def rows(self, ids: torch.Tensor | None, memory: Any = None):
            lm = self.cls.predictions.decoder
            return (lm.weight, lm.bias) if ids is None else (lm.weight[ids], lm.bias[ids])

        def special_ids(self, tok, name: str) -> tuple[int, int, int]:
            start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
            end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
            return _special(tok, start, end, tok.pad_token_id, name)

        def pretrained_parameters(self) -> list[nn.Parameter]:
            """Warm-started weights (body rate); cross-attention and the LM transform are new."""
            return [p for n, p in self.named_parameters()
                    if "crossattention" not in n and not n.startswith("cls.")]

    return BertDecoder


class Seq2SeqDecoder(nn.Module):
    """The decoder stack and tied LM head of a T5 or BART model (its encoder is the body)."""

    def __init__(self, full: nn.Module) -> None:
        super().__init__()
        config = full.config
        self.kind = config.model_type
        self.decoder = full.get_decoder()
        self.lm_head = full.lm_head
        bias = getattr(full, "final_logits_bias", None)  # BART: (1, V), zero unless fine-tuned
        self.register_buffer("final_logits_bias", None if bias is None else bias.detach().clone())
        # T5 scales the decoder's output when the LM head is tied to the embeddings
        tied = bool(getattr(config, "tie_word_embeddings", False))
        scale = getattr(config, "scale_decoder_outputs", tied) if self.kind == "t5" else False
        self.scale = float(config.d_model) ** -0.5 if scale else 1.0
        self.start_id = config.decoder_start_token_id
        self.width = int(config.d_model)
        self.max_answer = int(getattr(config, "max_position_embeddings", None)
                              or getattr(config, "n_positions", None) or 512)

    def states(self, inputs: torch.Tensor, mask: torch.Tensor | None, memory: torch.Tensor,
               k: int) -> torch.Tensor:
        """inputs (B*k, L), memory (B, S, Dd) shared by k answers -> (B*k, L, Dd)."""
        h = self.decoder(input_ids=inputs, attention_mask=mask,
                         encoder_hidden_states=memory.repeat_interleave(k, 0)).last_hidden_state
        return h * self.scale

    def rows(self, ids: torch.Tensor | None, memory: Any = None):
        w = self.lm_head.weight
        b = None if self.final_logits_bias is None else self.final_logits_bias[0]
        if ids is None:
            return w, b
        return w[ids], None if b is None else b[ids]

    def special_ids(self, tok, name: str) -> tuple[int, int, int]:
        # T5 starts with pad (0), BART with its end token </s> (2): the configs say so
        start = self.start_id if self.start_id is not None else tok.bos_token_id
        return _special(tok, start, tok.eos_token_id, tok.pad_token_id, name)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())  # all of it is the pretrained decoder


class PrefixDecoder(nn.Module):
    """A decoder-only body as a prefix LM: no weights of its own (they are the body's).

    Each answer is appended to the input's tokens and the body reads the whole sequence with
    its causal attention; the input is repeated once per label (K times the body's work, the
    same exact numbers as a key/value cache, without depending on transformers' cache API)."""

    kind = "gpt2"

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.width = None  # no memory projection: the body reads our tokens itself
        self.max_answer = body.max_tokens

    def states(self, inputs: torch.Tensor, mask: torch.Tensor | None, memory: Prefix,
               k: int) -> torch.Tensor:
        """inputs (B*k, L) answer ids after the input's tokens (B, S, D) -> (B*k, L, D)."""
        body, tokens = memory.body, memory.tokens.repeat_interleave(k, 0)  # (B*k, S, D)
        answer = body.model.get_input_embeddings()(inputs)  # (B*k, L, D)
        h = body.model(inputs_embeds=torch.cat([tokens, answer], 1)).last_hidden_state
        return h[:, tokens.shape[1]:]  # padding after an answer's end is never attended (causal)

    def rows(self, ids: torch.Tensor | None, memory: Prefix):
        w = memory.body.model.get_input_embeddings().weight  # GPT-2's LM head is tied to it
        return (w if ids is None else w[ids]), None

    def special_ids(self, tok, name: str) -> tuple[int, int, int]:
        # GPT-2 has one special token, <|endoftext|>: it separates input and answer, ends the
        # answer and pads (GPT-2 has no pad token)
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return _special(tok, start, tok.eos_token_id, tok.pad_token_id, name)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return []


def warm_bert_decoder(text_body: str) -> nn.Module:
    """A BERT decoder with cross-attention, its self-attention, FFN and embeddings loaded from
    the pretrained text model ``text_body`` (loaded through the one text-encoder path)."""
    from transformers import BertConfig

    from .text_tower import load_text_encoder

    encoder = load_text_encoder(text_body).model
    if encoder.config.model_type != "bert":
        raise ConfigError(f"--head generate warm-starts its decoder from a BERT-type text model; "
                          f"--text-body {text_body!r} is {encoder.config.model_type!r} (use minilm "
                          "or a BERT model folder)")
    config = BertConfig.from_dict({**encoder.config.to_dict(), "is_decoder": True,
                                   "add_cross_attention": True})
    decoder = bert_decoder_class()(config)
    missing, unexpected = decoder.bert.load_state_dict(encoder.state_dict(), strict=False)
    new = [k for k in missing if "crossattention" not in k]
    if unexpected or new:
        raise ConfigError(f"--text-body {text_body!r}: its weights do not fit a BERT decoder "
                          f"({(unexpected or new)[0]}); use minilm or a BERT model folder")
    # the new cross-attention starts as a no-op (output projection zero): the decoder starts as
    # the pretrained LM and the input's signal grows in through one linear map per layer, instead
    # of six random attention layers drowning it (measured on GunPoint: README "Labels as text")
    for layer in decoder.bert.encoder.layer:
        nn.init.zeros_(layer.crossattention.output.dense.weight)
        nn.init.zeros_(layer.crossattention.output.dense.bias)
    return decoder


def stored_bert_decoder(config: dict[str, Any]) -> nn.Module:
    from transformers import BertConfig

    return bert_decoder_class()(BertConfig.from_dict(config))
