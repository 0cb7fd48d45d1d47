"""The body interface: what the rest of transmodal may ask of any pretrained body.

A body family is one module with one ``@register_body`` class (timm's ``@register_model``,
PEFT's ``register_peft_method``); nothing outside the family's file looks at its internals.

    encode(tokens, grid)     (B, S, D) tokens on a grid -> (B, S', D') hidden states on grid'
    output_grid(grid)        the grid after the body (Swin halves it between stages)
    build_input(spec)        the module in front of it: a trained Embedder, or a fixed ImageInput
    blocks()                 its blocks in forward order ("freeze the first K")
    norm_layers()            its normalisation layers (FPT: train only these)
    final_norm_prefixes()    parameters after the last block that train with the top blocks
    bypassed_parameters()    parameters never used (the input layer our embedder replaces)
    lora_targets()           modules that get LoRA adapters; prepare_lora() readies them
    embed_tokens(tokens, g)  what the first block sees (alignment compares there)
    input_token_norm()       typical norm of its own input tokens (the embedder's initial scale)
    stored_config()          what a model file keeps to rebuild the architecture
    set_dropout(p)           the dropout of its layers while training (--dropout)
    answer_decoder(pre)      its own text decoder for --head generate (T5/BART: theirs; GPT-2:
                             itself as a prefix LM), or None: a BERT decoder from --text-body
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import ConfigError


class Body(nn.Module, metaclass=ABCMeta):
    family: ClassVar[str]  # registry key, stored in model.json (spec.body_kind)
    names: ClassVar[tuple[str, ...]] = ()  # exact --body names this family serves
    model_types: ClassVar[tuple[str, ...]] = ()  # transformers ``model_type`` values it serves
    takes_pixels: ClassVar[bool] = False  # a fixed image input instead of a trained embedder
    source_modality: ClassVar[str | None] = None  # "text" | "image": the align source reference
    causal: ClassVar[bool] = False  # decoder-only: token i sees only tokens up to i

    embed_dim: int  # width of the tokens it takes
    out_dim: int  # width of the hidden states it returns
    max_tokens: int  # longest token sequence it accepts

    # ------------------------------------------------------------------ building
    @classmethod
    @abstractmethod
    def load(cls, name: str, pretrained: bool = True, attention_dropout: float | None = 0.0) -> "Body":
        """Pretrained weights for ``name`` (or the same architecture randomly initialised)."""

    @classmethod
    @abstractmethod
    def rebuild(cls, spec: Any) -> "Body":
        """The architecture recorded in a model spec, with random weights (ours load next)."""

    def stored_config(self) -> dict[str, Any]:
        return {}

    def set_dropout(self, p: float) -> None:
        """Set every dropout layer of the body to ``p`` (--dropout). Why: the pooled features of a
        pretrained text body vary little between inputs of another modality, and its own
        hidden dropout (0.1 for MiniLM) moves them more than that (measured, session 5 note)."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p

    def build_input(self, spec: Any) -> nn.Module:
        """The module that turns (B, C, *spatial) inputs into what ``encode`` takes; it has a
        ``grid`` attribute (the token grid it produces)."""
        from ..embedder import Embedder

        max_tokens = min(spec.max_tokens, self.max_tokens)
        return Embedder(spec.in_channels, tuple(spec.spatial), self.embed_dim, max_tokens,
                        self.input_token_norm(), kind=spec.embedder)

    # ------------------------------------------------------------------ forward
    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]
               ) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Tokens on a grid -> hidden states on the output grid. A family that only embeds text
        (a text tower) has no such forward and says so."""
        raise ConfigError(f"a {self.family} body embeds text only; it cannot be the --body of a "
                          "model (use it as --text-body)")

    def output_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(grid)

    def embed_tokens(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        raise ConfigError(f"a {self.family} body cannot be aligned (--align); use --align none")

    def input_token_norm(self) -> float:
        """Needed by the trained embedder only; bodies that take pixels never ask for it."""
        raise ConfigError(f"a {self.family} body takes no token embeddings, so no embedder can be "
                          "built for it")

    # ------------------------------------------------------------------ parts (--tune)
    @abstractmethod
    def blocks(self) -> list[nn.Module]:
        """Its blocks in forward order (``--tune hybrid:K`` freezes the first K)."""

    def norm_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, nn.LayerNorm)]

    def final_norm_prefixes(self) -> tuple[str, ...]:
        return ()

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return []

    def lora_targets(self) -> list[str]:
        """Every nn.Linear inside the blocks (names relative to the body); see models/tuning.py."""
        names = {id(m): n for n, m in self.named_modules()}
        return [names[id(m)] for block in self.blocks() for m in block.modules()
                if isinstance(m, nn.Linear)]

    def prepare_lora(self, targets: list[str]) -> None:
        """Make ``targets`` wrappable by peft (in place); most bodies need nothing."""

    def answer_decoder(self, pretrained: bool) -> nn.Module | None:
        """The decoder that writes labels with ``--head generate`` (``models/decoders.py``),
        pretrained or the architecture only (a stored model's weights load next); None: the
        head warm-starts a BERT decoder from ``--text-body``."""
        return None

    # ------------------------------------------------------------------ as a text tower
    @classmethod
    def load_text_encoder(cls, name: str) -> "Body | None":
        """A pretrained body that embeds sentences (``sentence_embedding(ids, mask)``) for
        ``--text-body name`` of this family: the body itself if it is one, a companion (CLIP's
        text half, loaded without the vision half), or None (nothing is loaded)."""
        return cls.load(name) if hasattr(cls, "sentence_embedding") else None
