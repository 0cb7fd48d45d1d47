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
so they train at ``--head-lr`` like the embedder and head (``train.build_optimizer``).

LoRA models are saved as adapters + embedder + head, with a reference to the base body and a
SHA-256 fingerprint of its weights (see ``model.py``); ``merge_lora`` folds them into the base
weights for a plain model.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from .config import parse_tune
from .errors import CheckpointError, ConfigError

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
        trainable = {f"{m}.{p}" for m, mod in body.named_modules() if _is_norm(mod)
                     for p, _ in mod.named_parameters(recurse=False)}
    elif kind == "hybrid":
        blocks = body.blocks()
        if k > len(blocks):
            raise ConfigError(f"--tune hybrid:{k}: the body has only {len(blocks)} blocks; "
                              f"use K from 0 to {len(blocks)}")
        ids = {id(p) for blk in blocks[k:] for p in blk.parameters()}
        trainable = {n for n, p in named.items() if id(p) in ids or _after_blocks(n)}
    else:  # lora
        spec = lora_spec(body, lora_r, lora_alpha, lora_dropout)
        inject_lora(body, spec)
        model.spec.lora = spec
        named = dict(body.named_parameters())
        trainable = {n for n in named if ADAPTER_MARK in f".{n}"}
    trainable -= {n for n, _ in bypassed_parameters(body)}
    for name, p in named.items():
        p.requires_grad_(name in trainable)


def _is_norm(module: nn.Module) -> bool:
    """LayerNorm for transformers; BatchNorm for CNNs (their only normalisation layers)."""
    return isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))


def _after_blocks(name: str) -> bool:
    """Final norms after the last block (ViT/Swin ``layernorm``) train with the top blocks."""
    return name.startswith("model.layernorm.")


def bypassed_parameters(body: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Body parameters transmodal never calls: the input layer that its embedder replaces.

    Text bodies: the word embeddings (positions, token types and the embedding LayerNorm are
    used). ViT: the patch projection (CLS token and position embeddings are used). Swin: all of
    its embeddings but the patch LayerNorm. A CNN body uses everything (its stem sees the image).
    """
    family = getattr(body, "family", None)
    if family == "text":
        ids = {id(p) for p in body.model.get_input_embeddings().parameters()}
        return [(n, p) for n, p in body.named_parameters() if id(p) in ids]
    if family == "vit":
        used = ("model.embeddings.cls_token", "model.embeddings.position_embeddings")
    elif family == "swin":
        used = ("model.embeddings.norm.",)
    else:
        return []
    return [(n, p) for n, p in body.named_parameters()
            if n.startswith("model.embeddings.") and not n.startswith(used)]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ----------------------------------------------------------------------------- LoRA


def lora_targets(body: nn.Module) -> list[str]:
    """Names (relative to ``body``) of the modules that get adapters; see the module doc."""
    from .image_model import is_cnn_module

    names = {id(m): n for n, m in body.named_modules()}
    cnn = is_cnn_module(body)
    out = []
    for block in body.blocks():
        for m in block.modules():
            if cnn:
                if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
                    out.append(names[id(m)])
            elif isinstance(m, nn.Linear):
                out.append(names[id(m)])
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
    from .image_model import is_cnn_module

    targets = list(spec["target_modules"])
    if is_cnn_module(body):
        _plain_pointwise_convs(body, targets)
    config = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                        target_modules=targets, bias="none")
    inject_adapter_in_model(config, body)


def _plain_pointwise_convs(body: nn.Module, names: list[str]) -> None:
    """Swap the package's dynamic-"same"-padding 1x1 convs for ``nn.Conv2d`` sharing their tensors.

    peft builds its adapter convs as ``type(base_layer)(in, r, kernel, stride, padding)``, which
    the package's subclass reads as a dilation. A 1x1 stride-1 conv pads nothing either way, so
    the plain conv computes exactly the same function; state-dict keys stay the same.
    """
    for name in names:
        old = body.get_submodule(name)
        if type(old) is nn.Conv2d:
            continue
        if tuple(old.kernel_size) != (1, 1) or tuple(old.stride) != (1, 1) or old.groups != 1:
            raise ConfigError(f"--tune lora: {name} is not a pointwise convolution; cannot adapt it")
        new = nn.Conv2d(old.in_channels, old.out_channels, 1, bias=old.bias is not None)
        new.weight = old.weight
        new.bias = old.bias
        parent, _, leaf = name.rpartition(".")
        setattr(body.get_submodule(parent) if parent else body, leaf, new)


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


def adapter_keys(model: nn.Module) -> set[str]:
    """State-dict keys of a LoRA model that are saved: adapters + everything outside the body."""
    return {k for k in model.state_dict() if not k.startswith("body.") or ADAPTER_MARK in k}


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
