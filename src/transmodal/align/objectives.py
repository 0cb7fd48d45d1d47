"""Alignment objectives, found by ``--align NAME`` in a registry.

An objective is set up once per run with the source reference (labelled features ``xs (N, D)``,
``ys (N,)``: ``reference.py``) and then scores each target batch: ``distance(xt (B, D), yt (B,))``
is a differentiable scalar, lower meaning closer. Source-only work belongs in ``__init__``
(the align stage calls ``distance`` every step against the same source). A new objective is
one ``@register_alignment("name")`` class (from user code too: see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import ConfigError
from .distances import MMDSource, OTDDSource, l2

_OBJECTIVES: dict[str, type] = {}


def register_alignment(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name == "none" or (name in _OBJECTIVES and _OBJECTIVES[name] is not cls):
            raise ConfigError(f"an alignment named {name!r} is already registered")
        _OBJECTIVES[name] = cls
        return cls

    return add


def alignment_names() -> tuple[str, ...]:
    return tuple(_OBJECTIVES)


def build_alignment(name: str, xs: torch.Tensor, ys: torch.Tensor, cfg: Any):
    """The objective ``name`` set up on the source reference (``cfg``: the fit's FitConfig)."""
    try:
        cls = _OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"unknown --align {name!r}; choose one of none, "
                          f"{', '.join(_OBJECTIVES)}") from None
    return cls(xs, ys, cfg)


@register_alignment("otdd")
class OTDDAlignment:
    """Optimal transport dataset distance (ORCA's choice): compares class structure too."""

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, cfg: Any) -> None:
        # "entropic": the debiased Sinkhorn divergence, whose envelope gradient is exact (the
        # plain transport cost's gradient would be off by ~15% at reg 0.05; see distances.otdd);
        # class statistics and the source self-term are computed once here
        self.source = OTDDSource(xs, ys, reg=cfg.align_reg, objective="entropic")

    def distance(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        return self.source.distance(xt, yt)


@register_alignment("mmd")
class MMDAlignment:
    """Maximum mean discrepancy: the point clouds as wholes, no labels."""

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, cfg: Any) -> None:
        self.source = MMDSource(xs)  # bandwidths and the source term, once

    def distance(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        return self.source.distance(xt)


@register_alignment("l2")
class L2Alignment:
    """Means and per-feature spreads only: the baseline."""

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, cfg: Any) -> None:
        self.xs = xs

    def distance(self, xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        return l2(self.xs, xt)
