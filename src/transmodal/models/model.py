"""TransmodalModel = input module -> Body -> Head, and its safe on-disk form.

The input module is the trained ``Embedder`` for token bodies, or a fixed ``ImageInput`` for
bodies that take pixels (a CNN); the body family (``bodies/``) decides which, and the task
(``tasks/``) names the head. ``ModelSpec`` is plain JSON that rebuilds the exact architecture
without the original pretrained weights (a Hugging Face body's config is stored in it; a CNN's
name fixes it); the weights live in one safetensors file. Nothing is pickled.

A ``--tune lora`` model stores only the adapters, embedder and head; ``spec.lora`` names the
adapted modules and fingerprints the base body, which ``load_model`` loads again from
``spec.body`` (see ``tuning.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .bodies import Body, load_body, rebuild_body
from .heads import build_head

FORMAT = "transmodal-model/1"


@dataclass
class ModelSpec:
    task: str
    n_outputs: int
    in_channels: int
    spatial: list[int]
    body: str = "minilm"
    pretrained: bool = True
    max_tokens: int = 64
    attention_dropout: float = 0.0
    body_config: dict[str, Any] = field(default_factory=dict)  # filled when built
    # the body family (bodies/ registry key), set when built; files written before families had
    # names say "transformer" (a Hugging Face body: the stored config's model_type tells which)
    body_kind: str = ""
    image_size: int | None = None  # pixel bodies: side the images are resized to (None: default)
    augment: bool = False  # pixel bodies: random flip + resized crop in training mode (flip-crop)
    # token bodies: how inputs become tokens (models/embedder.py); files without it: "patch"
    embedder: str = "patch"
    # --tune lora: {r, alpha, dropout, target_modules, base_sha256}. The weights file then
    # holds only adapters + embedder + head; the base body is loaded from ``body``.
    lora: dict[str, Any] | None = None
    # contrastive models: {body, tune, embed_dim, class_texts, base_sha256} of the text tower
    text: dict[str, Any] | None = None
    # the registered head; "" (and files written before heads were chosen): the task's own
    head: str = ""
    # generate heads: {text_body, labels, decode, label_ids, start, end, pad, decoder_config}
    generate: dict[str, Any] | None = None
    # pooled heads: "batch" standardises the pooled features before the linear layer
    # (--head-norm); files without it: "none"
    head_norm: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(**d)


class TransmodalModel(nn.Module):
    """(B, C, *spatial) -> logits (B, K) | outputs (B, K) | dense (B, K, *spatial)."""

    def __init__(self, embedder: nn.Module, body: Body, head: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.embedder = embedder
        self.body = body
        self.head = head
        self.spec = spec

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Inputs -> body states (B, S', D') on the body's output grid (what the head takes)."""
        tokens = self.embedder(x)  # (B, S, D); pixel bodies: (B, 3, S, S)
        return self.body.encode(tokens, self.embedder.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.head, "reads_input", False):  # a prefix LM (GPT-2 + generate): the body
            # reads the input's tokens and then the answer's, so the head drives it
            return self.head.forward_prefix(self.body, self.embedder(x), self.embedder.grid)
        hidden, grid = self.features(x)  # (B, S', D') on grid'
        return self.head(hidden, grid)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Weights that come pretrained (the body's, and a head's text encoder): they train at
        the body learning rate; everything else is new and trains at the head rate."""
        extra = getattr(self.head, "pretrained_parameters", None)
        return list(self.body.parameters()) + (extra() if extra else [])


def copy_with(model: nn.Module, tensor: Callable[[torch.Tensor], torch.Tensor],
              buffers: bool = True) -> nn.Module:
    """A ``deepcopy`` of ``model`` whose parameters (and buffers, when ``buffers``) are
    ``tensor(t)`` instead of copies of ``t``: made without a second copy where ``t`` lives
    (tied weights stay tied; other buffers are deep-copied as they are)."""
    import copy

    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *(model.buffers() if buffers else ())]:
        if id(t) not in memo:
            new = tensor(t.detach())
            memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
    return copy.deepcopy(model, memo)


def cpu_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the CPU, made without a second copy on its device (``deepcopy``
    then ``.cpu()`` would briefly hold the model twice in GPU memory)."""
    return copy_with(model, lambda t: t.to("cpu", copy=True))  # a copy even on the CPU


def body_of(spec: ModelSpec, rebuild: bool = False) -> Body:
    """The spec's body: the recorded architecture (``rebuild``; its weights load next), or the
    pretrained (``spec.pretrained``) or random body of a new model, whose family is recorded."""
    if rebuild:
        return rebuild_body(spec)
    body = load_body(spec.body, pretrained=spec.pretrained, attention_dropout=spec.attention_dropout)
    spec.body_kind = body.family
    return body


def build_model(spec: ModelSpec, rebuild: bool = False) -> TransmodalModel:
    """Build from a spec: the body with pretrained weights (``spec.pretrained``) or random ones;
    ``rebuild=True`` makes the architecture a model file records (``load_model`` then loads our
    own weights)."""
    from ..tasks import get_task

    body = body_of(spec, rebuild)
    if not body.takes_pixels and (spec.image_size is not None or spec.augment):
        raise ConfigError("--image-size and --augment flip-crop apply to CNN image bodies "
                          "(--body efficientnet-lite0) only")
    if body.takes_pixels and spec.embedder != "patch":
        raise ConfigError(f"--embedder {spec.embedder}: {spec.body} takes images directly (no "
                          "embedder); drop --embedder")
    spec.body_config = body.stored_config()
    embedder = body.build_input(spec)
    head = build_head(spec.head or get_task(spec.task).head, body, embedder.grid, spec)
    return TransmodalModel(embedder, body, head, spec)


# ----------------------------------------------------------------------------- disk


def save_model(model: TransmodalModel, folder: Path, extra: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` (spec + ``extra``, e.g. preprocessing)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    keep = stored_keys(model)  # pretrained parts that did not train are referenced, not copied
    state = {k: v for k, v in state.items() if k in keep}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(folder / "model.safetensors")
    meta = {"format": FORMAT, "spec": model.spec.to_dict(), **extra}
    tmp_json = folder / "model.json.tmp"
    tmp_json.write_text(json.dumps(meta, indent=1, default=str))
    tmp_json.replace(folder / "model.json")


def load_model(folder: Path) -> tuple[TransmodalModel, dict[str, Any]]:
    """Rebuild the architecture from JSON and load the safetensors weights (no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise CheckpointError(
            f"{folder} has no model.json/model.safetensors: not a transmodal model folder "
            "(an unfinished run has none)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}); the file is damaged") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    spec = ModelSpec.from_dict(meta["spec"])
    model = _rebuild(spec)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({e}); it may be truncated: "
            "re-copy the run folder"
        ) from None
    keep = stored_keys(model)
    ours = {k: v for k, v in model.state_dict().items() if k in keep}
    mismatch = architecture_mismatch(ours, state)
    if mismatch:
        raise CheckpointError(
            f"{weights} does not match the architecture in model.json ({mismatch}): "
            "the files come from different models: re-copy the whole run folder"
        )
    # a LoRA base body and a locked text encoder were loaded (and fingerprinted) by _rebuild
    model.load_state_dict(state, strict=len(ours) == len(model.state_dict()))
    return model, meta


def stored_keys(model: TransmodalModel) -> set[str]:
    """State-dict keys a model file holds: all but a LoRA model's base body (adapters are kept)
    and a head's frozen pretrained parts (a locked text tower); both are loaded again from
    their names and checked against a SHA-256 of their weights."""
    from .tuning import ADAPTER_MARK

    state = model.state_dict()
    keys = set(state) - tied_duplicates(state)
    if model.spec.lora:
        keys = {k for k in keys if not k.startswith("body.") or ADAPTER_MARK in k}
    frozen = getattr(model.head, "frozen_keys", None)
    return keys - frozen("head.") if frozen else keys


def tied_duplicates(state: dict[str, torch.Tensor]) -> set[str]:
    """Keys of tensors that share memory with an earlier key (tied weights, e.g. a decoder's
    output layer and its word embeddings): stored once, the tie fills the other on loading."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = set()
    for k, v in state.items():
        if v.numel() == 0:
            continue
        key = (v.data_ptr(), tuple(v.shape))
        if key in seen:
            out.add(k)
        seen.add(key)
    return out


def _rebuild(spec: ModelSpec) -> nn.Module:
    """The saved architecture, weights still to load. A LoRA model loads its base body from the
    reference in the spec (checked against its fingerprint) and gets its adapters injected."""
    if spec.lora:
        from .tuning import check_base_body, inject_lora

        lora = spec.lora
        try:
            model = build_model(spec)  # pretrained base body from spec.body
        except ConfigError as e:
            raise CheckpointError(f"this LoRA model needs its base body {spec.body!r}, which cannot "
                                  f"be loaded: {e}") from None
        spec.lora = lora
        check_base_body(model.body, lora, spec.body)
        inject_lora(model.body, lora)
        return model
    return build_model(spec, rebuild=True)


def architecture_mismatch(ours: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` fits ``ours`` exactly, else a short description of what differs."""
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    resized = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or resized):
        return ""
    example = (missing or unexpected or resized)[0]
    return (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(resized)} resized "
            f"tensors, e.g. {example}")
