"""Which parameters train: the ``--tune`` strategies as requires_grad switches.

| tune       | trains                                                               |
|------------|----------------------------------------------------------------------|
| full       | everything (pretrained body)                                         |
| scratch    | everything (same architecture, random body weights)                  |
| frozen     | embedder + head; the body is fixed                                   |
| layernorm  | embedder + head + the body's LayerNorms (FPT, Lu et al. 2021)        |
| hybrid:K   | embedder + head + body blocks K.. ; the body's input embeddings and  |
|            | its first K blocks are fixed                                         |
| lora       | embedder + head + LoRA adapters (peft)                               |
"""

from __future__ import annotations

from torch import nn

from .config import parse_tune
from .errors import ConfigError


def apply_tuning(model: nn.Module, tune: str) -> None:
    """Set ``requires_grad`` on every parameter of ``model`` for the strategy ``tune``."""
    kind, k = parse_tune(tune)
    body = model.body
    for p in model.parameters():
        p.requires_grad_(True)
    if kind in ("full", "scratch"):
        return
    if kind == "lora":
        raise ConfigError("--tune lora is not available in this version yet; use full, frozen, "
                          "layernorm, hybrid:K or scratch")
    if kind in ("frozen", "layernorm"):
        for p in body.parameters():
            p.requires_grad_(False)
        if kind == "layernorm":
            for norm in body.layer_norms():
                for p in norm.parameters():
                    p.requires_grad_(True)
        return
    blocks = body.blocks()
    if k > len(blocks):
        raise ConfigError(f"--tune hybrid:{k}: the body has only {len(blocks)} blocks")
    trainable = {id(p) for blk in blocks[k:] for p in blk.parameters()}
    if k == 0:  # nothing frozen: hybrid:0 is full fine-tuning
        return
    trainable |= {id(p) for name, p in body.named_parameters() if _after_blocks(name)}
    for p in body.parameters():
        p.requires_grad_(id(p) in trainable)


def _after_blocks(name: str) -> bool:
    """Final norms after the last block (e.g. ViT/Swin ``layernorm``) train with the top blocks."""
    return name.startswith("model.layernorm")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
