"""Body families, found by name in a registry (see ``base.Body`` for the interface).

``--body`` takes a registered exact name (``efficientnet-lite0``), the offline alias ``minilm``,
a local Hugging Face model folder or a hub id; a Hugging Face body's family comes from its
config's ``model_type``. A new family is one module with a ``@register_body`` class (from user
code too: see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .base import Body

_FAMILIES: dict[str, type[Body]] = {}


def register_body(cls: type[Body]) -> type[Body]:
    """Class decorator: make a :class:`Body` subclass known by its ``family`` (and serve its
    ``names`` and ``model_types``)."""
    taken = [c.family for c in _FAMILIES.values() if c is not cls and c.family != cls.family
             and (set(c.names) & set(cls.names) or set(c.model_types) & set(cls.model_types))]
    if taken:
        raise ConfigError(f"body family {cls.family!r} claims names or model types of {taken[0]!r}")
    _FAMILIES[cls.family] = cls
    return cls


def family(name: str) -> type[Body]:
    """A registered family by its key (as stored in model files)."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown body family {name!r}; known: {', '.join(_FAMILIES)}") from None


def family_for_name(name: str) -> type[Body] | None:
    """The family that serves ``--body name`` exactly, or None (a Hugging Face body then)."""
    for cls in _FAMILIES.values():
        if str(name).lower() in cls.names:
            return cls
    return None


def family_for_model_type(model_type: str) -> type[Body]:
    for cls in _FAMILIES.values():
        if model_type in cls.model_types:
            return cls
    supported = [t for c in _FAMILIES.values() for t in c.model_types]
    raise ConfigError(
        f"body type {model_type!r} is not supported: it must be an encoder that accepts token "
        f"embeddings; supported types: {', '.join(supported)}"
    )


def takes_pixels(name: str) -> bool:
    """True when ``--body name`` takes images directly (no trained embedder, no alignment)."""
    cls = family_for_name(name)
    return bool(cls is not None and cls.takes_pixels)


def load_body(name: str, pretrained: bool = True, attention_dropout: float | None = 0.0) -> Body:
    """The body for ``--body name``: pretrained weights, or the same architecture at random."""
    cls = family_for_name(name)
    if cls is None:
        from .hf import HFBody

        cls = HFBody
    return cls.load(name, pretrained=pretrained, attention_dropout=attention_dropout)


def family_of(name: str) -> type[Body]:
    """The family that ``load_body(name)`` builds, read from the name or the model's config
    (no weights loaded)."""
    cls = family_for_name(name)
    if cls is None:
        from .hf import load_body_config

        cls = family_for_model_type(load_body_config(name).model_type)
    return cls


def rebuild_body(spec: Any) -> Body:
    """The architecture a model spec records (weights still to load)."""
    kind = spec.body_kind
    if kind == "transformer":  # written before families had names: the config says which
        from .hf import HFBody

        return HFBody.rebuild(spec)
    return family(kind).rebuild(spec)


# the built-in families register themselves on import
from . import clip, efficientnet, gpt2, seq2seq, swin, text, vit  # noqa: E402,F401

__all__ = ["Body", "register_body", "family", "family_for_name", "family_for_model_type",
           "takes_pixels", "load_body", "family_of", "rebuild_body"]
