"""Heads, found by name in a registry: a head turns the body's hidden states into raw outputs.

Interface (timm's ``forward_head`` idea, one class per head): ``build(body, grid, spec)`` makes
the head for a body whose input token grid is ``grid``; ``forward(hidden (B, S', D'), grid')``
returns the task's raw outputs. A task names its head (``Task.head``). A new head is one module
with a ``@register_head("name")`` class (from user code too: see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import ConfigError

_HEADS: dict[str, type] = {}


def register_head(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in _HEADS and _HEADS[name] is not cls:
            raise ConfigError(f"a head named {name!r} is already registered")
        _HEADS[name] = cls
        return cls

    return add


def build_head(name: str, body: Any, grid: tuple[int, ...], spec: Any):
    try:
        cls = _HEADS[name]
    except KeyError:
        raise ConfigError(f"unknown head {name!r}; known: {', '.join(_HEADS)}") from None
    return cls.build(body, grid, spec)


from . import contrastive, dense, generate, pooled  # noqa: E402,F401  (the built-in heads register themselves)
from .dense import DenseHead  # noqa: E402
from .pooled import PooledHead  # noqa: E402

__all__ = ["register_head", "build_head", "PooledHead", "DenseHead"]
