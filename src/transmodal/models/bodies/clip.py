"""Hugging Face CLIP models: the vision tower as a body for images, the text tower as the text
tower of a contrastive model (when a network or a local copy of a CLIP model exists).

- ``--body CLIP_FOLDER`` (``model_type`` "clip" or "clip_vision_model"): our tokens + CLIP's
  position embeddings (resized to the token grid) with its class token in front, its
  pre-LayerNorm, its encoder and its post-LayerNorm; the class token's output is dropped.
- ``--text-body CLIP_FOLDER``: CLIP's own text encoder and text projection; a sentence's
  embedding is its end-of-text token's state projected, as CLIP pools it (not a mean).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import register_body
from .hf import HFBody, load_body_config, resolve_body_path
from .vit import PatchVisionBody, grid_positions


@register_body
class ClipVisionBody(PatchVisionBody):
    family = "clip"
    model_types = ("clip", "clip_vision_model")

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.embed_dim = int(model.config.hidden_size)
        self.out_dim = self.embed_dim
        self.max_tokens = int(model.embeddings.position_embedding.num_embeddings) - 1

    @classmethod
    def build_model(cls, config, pretrained: bool, path: str | None) -> nn.Module:
        from transformers import CLIPVisionModel

        vision = config.vision_config if config.model_type == "clip" else config
        if pretrained:
            return CLIPVisionModel.from_pretrained(path, config=vision)
        return CLIPVisionModel(vision)

    def patch_projection(self) -> nn.Conv2d:
        return self.model.embeddings.patch_embedding

    def position_embeddings_for(self, grid: tuple[int, ...]) -> torch.Tensor:
        pos = self.model.embeddings.position_embedding.weight[1:].unsqueeze(0)  # (1, P, D)
        return grid_positions(pos, grid)

    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]):
        """tokens (B, S, D) -> hidden (B, S, D) on the same grid."""
        emb = self.model.embeddings
        cls_tok = emb.class_embedding + emb.position_embedding.weight[0]  # (D,)
        pos = self.position_embeddings_for(grid).to(tokens.dtype)
        hidden = torch.cat([cls_tok.to(tokens.dtype).expand(len(tokens), 1, -1), tokens + pos], dim=1)
        hidden = self.model.pre_layrnorm(hidden)  # (B, 1+S, D)
        out = self.model.encoder(inputs_embeds=hidden).last_hidden_state
        return self.model.post_layernorm(out)[:, 1:], grid

    def embed_tokens(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        pos = self.position_embeddings_for(grid).to(tokens.dtype)
        return self.model.pre_layrnorm(tokens + pos)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)

    def final_norm_prefixes(self) -> tuple[str, ...]:
        return ("model.post_layernorm.",)

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Its patch projection (the class token and positions are used)."""
        return [(n, p) for n, p in self.named_parameters()
                if n.startswith("model.embeddings.patch_embedding.")]

    @classmethod
    def load_text_encoder(cls, name: str) -> "ClipTextBody":
        """The text half of the same CLIP model, for ``--text-body`` (the vision half is never
        loaded)."""
        return ClipTextBody.load(name)


@register_body
class ClipTextBody(HFBody):
    """CLIP's text encoder with its projection; used as a contrastive model's text tower."""

    family = "clip-text"
    model_types = ("clip_text_model",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        cfg = model.config
        self.embed_dim = int(cfg.hidden_size)
        self.out_dim = int(cfg.projection_dim)  # the projected sentence embedding
        self.max_tokens = int(cfg.max_position_embeddings)

    @classmethod
    def load(cls, name: str, pretrained: bool = True, attention_dropout: float | None = 0.0):
        config = load_body_config(name, attention_dropout)
        text = config.text_config if config.model_type == "clip" else config
        return cls(cls.build_model(text, pretrained, resolve_body_path(name)))

    @classmethod
    def build_model(cls, config, pretrained: bool, path: str | None) -> nn.Module:
        from transformers import CLIPTextModelWithProjection

        if pretrained:
            return CLIPTextModelWithProjection.from_pretrained(path, config=config)
        return CLIPTextModelWithProjection(config)

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def sentence_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """CLIP's pooled text embedding: the end-of-text state, projected (B, projection_dim)."""
        return self.model(input_ids=ids, attention_mask=mask).text_embeds

    def blocks(self) -> list[nn.Module]:
        return list(self.model.text_model.encoder.layers)

    def input_token_norm(self) -> float:
        with torch.no_grad():
            return float(self.model.text_model.embeddings.token_embedding.weight.norm(dim=1).mean())

    def stored_config(self) -> dict[str, Any]:
        return self.model.config.to_dict()
