"""Text encoders (BERT, RoBERTa, DistilBERT, ELECTRA, MPNet, ...): ``model(inputs_embeds=...)``.

The model adds its own position (and token-type) embeddings and embedding LayerNorm to our
tokens, exactly as it does to its word embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from . import register_body
from .hf import HFBody

_POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert")  # positions start at 2


@register_body
class TextBody(HFBody):
    family = "text"
    model_types = (
        "bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "camembert",
        "albert", "deberta", "deberta-v2", "ernie", "xlm", "mobilebert",
    )
    source_modality = "text"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        cfg = model.config
        self.embed_dim = int(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.dim)
        self.out_dim = self.embed_dim
        offset = 2 if cfg.model_type in _POSITION_OFFSET_TYPES else 0
        self.max_tokens = int(cfg.max_position_embeddings) - offset

    @classmethod
    def model_kwargs(cls, config) -> dict[str, Any]:
        return {"add_pooling_layer": False} if config.model_type in ("bert", "roberta") else {}

    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]):
        """tokens (B, S, D) -> hidden (B, S, D) on the same grid."""
        return self.model(inputs_embeds=tokens).last_hidden_state, grid

    def embed_tokens(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        return self.model.embeddings(inputs_embeds=tokens)

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Real token ids (B, T) with their attention mask -> hidden states (B, T, D): the body
        used as a text encoder (the text tower of a contrastive model)."""
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def sentence_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One vector per text (B, D): the hidden states mean-pooled over the real tokens (what
        sentence-transformers does for all-MiniLM-L6-v2)."""
        hidden = self.encode_ids(ids, mask)  # (B, T, D)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) through the body's own embedding module -> (B, T, D)."""
        return self.model.embeddings(input_ids=ids)

    @torch.no_grad()
    def input_token_norm(self) -> float:
        return float(self.model.get_input_embeddings().weight.norm(dim=1).mean())

    def blocks(self) -> list[nn.Module]:
        m = self.model
        for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
            obj = m
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, nn.ModuleList):
                return list(obj)
        raise ConfigError(f"cannot find the transformer blocks of {type(m).__name__}")

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The word embeddings (positions, token types and the embedding LayerNorm are used)."""
        ids = {id(p) for p in self.model.get_input_embeddings().parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]
