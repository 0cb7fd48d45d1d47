"""Which parameters train: the ``--tune`` strategies as requires_grad switches (and LoRA adapters).

| tune       | transformer body trains                    | CNN body (EfficientNet-Lite0) trains        |
|------------|--------------------------------------------|---------------------------------------------|
| full       | every body parameter it uses               | everything                                  |
| scratch    | same as full, random initial body weights  | same as full, random initial weights        |
| frozen     | nothing (embedder + head only)             | nothing (feature extraction + new head)     |
| layernorm  | every LayerNorm, the embedding LayerNorm   | every BatchNorm (affine parameters; their   |
|            | included (FPT, Lu et al. 2021)             | running statistics follow the new data)     |
| hybrid:K   | blocks K.. and the final norm; the input   | blocks K.. of [stem, 7 stages, head]        |
|            | embeddings (positions, token types, CLS,   |                                             |
|            | embedding LayerNorm) and blocks 0..K-1     |                                             |
|            | are fixed                                  |                                             |
| lora       | LoRA adapters on every nn.Linear inside    | LoRA adapters on every pointwise (1x1)      |
|            | the blocks (attention q/k/v/output, FFN)   | convolution (expand, project, head conv)    |

The new parts (the embedder, or a CNN's input module, and the head) always train.

Never trained: the body's own token/patch input layer (word embeddings of a text body, the patch
projection of ViT/Swin). transmodal's embedder replaces it, so it gets no gradient; keeping it
frozen makes the reported trainable-parameter count the count that actually trains (for MiniLM
the word embeddings are 11.7 M of its 22.7 M parameters).

**LoRA targets** (peft, Hu et al. 2021): every linear layer inside the transformer blocks, not only
the attention query/value pair of the LoRA paper: Dettmers et al. (QLoRA, 2023) found LoRA matches
full fine-tuning only when all linear layers are adapted, and the extra adapters cost little
(MiniLM, r=8: 0.33 M parameters vs 74 k for q/v alone). The rule is generic, so DistilBERT gets
q_lin/k_lin/v_lin/out_lin/lin1/lin2 and Swin also its patch-merging reductions. On the CNN the
pointwise convolutions hold almost all weights (the depthwise ones have rank <= 1 per channel
group, where a low-rank update means nothing); they are 1x1 stride-1 so their TensorFlow "same"
padding is zero and they are swapped for a plain ``nn.Conv2d`` (same tensors) that peft can wrap.
BatchNorm stays frozen under LoRA (eval mode: statistics unchanged). Adapters are new weights,
so they train at ``--head-lr`` like the embedder and head (``engine/optim.build_optimizer``).

Every rule above asks the body (``bodies/base.py``): its blocks, norm layers, final norms,
bypassed input layer and LoRA targets; nothing here knows a body family.

LoRA models are saved as adapters + embedder + head, with a reference to the base body and a
SHA-256 fingerprint of its weights (see ``model.py``); ``merge_lora`` folds them into the base
weights for a plain model.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from ..config import parse_tune
from ..errors import CheckpointError, ConfigError

ADAPTER_MARK = ".lora_"  # peft names every adapter tensor ...lora_A/lora_B...


def apply_tuning(model: nn.Module, tune: str, *, lora_r: int = 8, lora_alpha: int = 16,
                 lora_dropout: float = 0.05) -> None:
    """Set ``requires_grad`` on every parameter of ``model`` for the strategy ``tune``.

    ``lora`` also injects the adapters into ``model.body`` and records their configuration in
    ``model.spec.lora`` (what ``load_model`` needs to rebuild them).
    """
    kind, k = parse_tune(tune)
    body = model.body
    model.requires_grad_(True)  # the embedder / input module and the head always train
    named = dict(body.named_parameters())
    if kind in ("full", "scratch") or (kind == "hybrid" and k == 0):
        trainable = set(named)
    elif kind == "frozen":
        trainable = set()
    elif kind == "layernorm":
        norms = {id(m) for m in body.norm_layers()}
        trainable = {f"{m}.{p}" for m, mod in body.named_modules() if id(mod) in norms
                     for p, _ in mod.named_parameters(recurse=False)}
    elif kind == "hybrid":
        blocks = body.blocks()
        if k > len(blocks):
            raise ConfigError(f"--tune hybrid:{k}: the body has only {len(blocks)} blocks; "
                              f"use K from 0 to {len(blocks)}")
        ids = {id(p) for blk in blocks[k:] for p in blk.parameters()}
        after = body.final_norm_prefixes()  # norms after the last block train with the top blocks
        trainable = {n for n, p in named.items() if id(p) in ids or n.startswith(after)}
    else:  # lora
        spec = lora_spec(body, lora_r, lora_alpha, lora_dropout)
        inject_lora(body, spec)
        model.spec.lora = spec
        named = dict(body.named_parameters())
        trainable = {n for n in named if ADAPTER_MARK in f".{n}"}
    trainable -= {n for n, _ in body.bypassed_parameters()}  # the input layer our embedder replaces
    for name, p in named.items():
        p.requires_grad_(name in trainable)
    head_rule = getattr(model.head, "apply_tuning", None)  # e.g. a locked text tower stays locked
    if head_rule is not None:
        head_rule()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ----------------------------------------------------------------------------- LoRA


def lora_targets(body: nn.Module) -> list[str]:
    """Names (relative to ``body``) of the modules that get adapters; see the module doc."""
    out = body.lora_targets()
    if not out:
        raise ConfigError(f"--tune lora: found no layers to adapt in {type(body).__name__}")
    return out


def lora_spec(body: nn.Module, r: int, alpha: int, dropout: float) -> dict[str, Any]:
    """JSON-able description of the adapters, with a fingerprint of the base weights."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"--lora-dropout must be in [0, 1), got {dropout}")
    return {"r": int(r), "alpha": int(alpha), "dropout": float(dropout),
            "target_modules": lora_targets(body), "base_sha256": body_fingerprint(body)}


def inject_lora(body: nn.Module, spec: dict[str, Any]) -> None:
    """Wrap ``spec['target_modules']`` of ``body`` with peft LoRA layers (in place)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError("--tune lora needs the package peft: pip install peft") from None
    targets = list(spec["target_modules"])
    body.prepare_lora(targets)  # e.g. the CNN swaps its padded 1x1 convs for plain ones
    # GPT-2's Conv1D layers store their weight transposed (peft warns and flips it otherwise)
    config = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                        target_modules=targets, bias="none",
                        fan_in_fan_out=bool(getattr(body, "lora_fan_in_fan_out", False)))
    inject_adapter_in_model(config, body)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and remove them (in place): a plain model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    body = model.body
    for name, module in list(body.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)  # safe_merge: refuse NaN/inf instead of writing them
            parent, _, leaf = name.rpartition(".")
            setattr(body.get_submodule(parent) if parent else body, leaf, module.get_base_layer())
    model.spec.lora = None
    return model


@torch.no_grad()
def body_fingerprint(body: nn.Module) -> str:
    """SHA-256 over the body's state (names, shapes, dtypes, bytes), before adapters exist."""
    h = hashlib.sha256()
    for name, t in sorted(body.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_base_body(body: nn.Module, spec: dict[str, Any], reference: str) -> None:
    """The base body a LoRA model is loaded onto must be the one it was trained on."""
    if body_fingerprint(body) != spec.get("base_sha256"):
        raise CheckpointError(
            f"the base body {reference!r} now has different weights from the one these LoRA "
            "adapters were trained on; restore that body, or load the merged model "
            "(fit with --merge / Run.merge()), which carries its own weights"
        )
