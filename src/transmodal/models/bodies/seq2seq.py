"""Encoders of encoder-decoder models (T5, BART) as bodies; their decoders serve --head generate.

The body is the encoder alone (the decoder's weights are not loaded for a linear or dense
head); ``answer_decoder`` loads the pretrained decoder and LM head from the same folder only
when a generate head asks for it (``models/decoders.py``, ``Seq2SeqDecoder``). Our tokens go
in as ``inputs_embeds``: T5 adds nothing (relative position biases live in its attention),
BART adds its learned positions and embedding LayerNorm.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from . import register_body
from .hf import HFBody


class EncoderOfSeq2Seq(HFBody):
    """Shared by T5 and BART: the encoder in ``self.model``, the whole model's config."""

    full_class: ClassVar[str]  # the transformers class with the decoder and LM head

    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]):
        """tokens (B, S, D) -> hidden (B, S, D) on the same grid (bidirectional)."""
        return self.model(inputs_embeds=tokens).last_hidden_state, grid

    def embedding_scale(self) -> float:
        return 1.0

    @torch.no_grad()
    def input_token_norm(self) -> float:
        w = self.model.get_input_embeddings().weight
        return float(w.norm(dim=1).mean()) * self.embedding_scale()

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The word embeddings (the encoder's input layer our embedder replaces)."""
        ids = {id(p) for p in self.model.get_input_embeddings().parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]

    def norm_layers(self) -> list[nn.Module]:
        # T5LayerNorm is an RMS norm, not an nn.LayerNorm
        return [m for m in self.modules() if isinstance(m, nn.LayerNorm)
                or type(m).__name__.endswith("LayerNorm")]

    def answer_decoder(self, pretrained: bool) -> nn.Module:
        """The model's own decoder and tied LM head (pretrained from ``self.source``)."""
        import transformers

        from ..decoders import Seq2SeqDecoder

        cls = getattr(transformers, self.full_class)
        if pretrained:
            full = cls.from_pretrained(self.source, config=self.model.config)
        else:
            full = cls(self.model.config)
        return Seq2SeqDecoder(full)


@register_body
class T5Body(EncoderOfSeq2Seq):
    family = "t5"
    model_types = ("t5",)
    full_class = "T5ForConditionalGeneration"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        cfg = model.config
        self.embed_dim = self.out_dim = int(cfg.d_model)
        # relative positions: no hard limit; the pretraining length bounds what it has seen
        self.max_tokens = int(getattr(cfg, "n_positions", None) or 512)

    @classmethod
    def build_model(cls, config, pretrained: bool, path: str | None) -> nn.Module:
        from transformers import T5EncoderModel

        if pretrained:
            return T5EncoderModel.from_pretrained(path, config=config)
        return T5EncoderModel(config)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.block)

    def final_norm_prefixes(self) -> tuple[str, ...]:
        return ("model.encoder.final_layer_norm.",)


@register_body
class BartBody(EncoderOfSeq2Seq):
    family = "bart"
    model_types = ("bart",)
    full_class = "BartForConditionalGeneration"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        cfg = model.config
        self.embed_dim = self.out_dim = int(cfg.d_model)
        self.max_tokens = int(cfg.max_position_embeddings)

    @classmethod
    def build_model(cls, config, pretrained: bool, path: str | None) -> nn.Module:
        from transformers import BartModel

        full = BartModel.from_pretrained(path, config=config) if pretrained else BartModel(config)
        return full.get_encoder()  # the decoder is dropped (answer_decoder loads it if asked)

    def embedding_scale(self) -> float:
        cfg = self.model.config
        return float(cfg.d_model) ** 0.5 if cfg.scale_embedding else 1.0

    def blocks(self) -> list[nn.Module]:
        return list(self.model.layers)

    def final_norm_prefixes(self) -> tuple[str, ...]:
        return ("model.layer_norm.",)  # mBART-style configs only; BART has none
