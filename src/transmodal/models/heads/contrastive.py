"""Contrastive head (CLIP): the target tower's projection, the text tower, a learnable temperature.

    hidden (B, S, D) -> mean -> proj -> L2-normalise -> z (B, E)
    class texts (K classes x P prompts) -> text tower -> L2-normalise -> mean over prompts
        -> L2-normalise -> t (K, E)            (a prompt ensemble, as open_clip's zero-shot)
    logits = exp(logit_scale) * z @ t.T        (B, K); exp(logit_scale) starts at 1/0.07 and is
                                               clamped at 100, as in CLIP

The raw outputs are logits over the training class texts, so classification decoding, scores
and the best-epoch choice work unchanged; the contrastive task's loss (``tasks/contrastive.py``)
gathers the in-batch text columns from them. Zero-shot prediction swaps ``t`` for the
embeddings of new label texts (``text_embeddings``); scoring a split's own captions swaps it
inside ``against(groups)``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import CheckpointError, ConfigError
from . import register_head

INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0
TEXT_TUNES = ("frozen", "lora", "full")
TEXT_LORA = {"r": 8, "alpha": 16, "dropout": 0.05}  # --text-tune lora: peft adapters on the encoder
LOCKED_CHUNK = 256  # texts per encoder call when caching a locked encoder's states (memory)


@register_head("contrastive")
class ContrastiveHead(nn.Module):
    @classmethod
    def build(cls, body, grid: tuple[int, ...], spec) -> "ContrastiveHead":
        from ..bodies.hf import resolve_body_path
        from ..text_tower import TextTower, load_text_encoder
        from ..tuning import body_fingerprint, inject_lora, lora_spec

        text = spec.text
        if not text or not text.get("class_texts"):
            raise ConfigError("a contrastive model needs texts: string labels, --descriptions "
                              "or --template")
        if text["tune"] not in TEXT_TUNES:
            raise ConfigError(f"unknown --text-tune {text['tune']!r}; choose one of {', '.join(TEXT_TUNES)}")
        encoder = load_text_encoder(text["body"])
        fingerprint = body_fingerprint(encoder)
        if text.get("base_sha256") is None:
            text["base_sha256"] = fingerprint
        elif text["tune"] != "full" and fingerprint != text["base_sha256"]:
            raise CheckpointError(f"the text body {text['body']!r} now has other weights than the "
                                  "text tower this model was trained with; restore that body")
        if text["tune"] == "lora":  # adapters on every linear layer of its blocks
            text.setdefault("lora", lora_spec(encoder, **TEXT_LORA))
            inject_lora(encoder, text["lora"])
        tower = TextTower(encoder, resolve_body_path(text["body"]), int(text["embed_dim"]))
        return cls(body.out_dim, tower, text["class_texts"], text["tune"])

    def __init__(self, dim: int, tower: nn.Module, class_texts: Sequence[Sequence[str]],
                 text_tune: str = "frozen") -> None:
        super().__init__()
        embed_dim = tower.proj.out_features
        self.proj = nn.Linear(dim, embed_dim)  # the target tower's projection
        self.text = tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))
        self.class_texts = [list(t) for t in class_texts]
        self.text_tune = text_tune
        # frozen tower: encoder states of each text set used so far (the training texts, a
        # validation split's captions), keyed by the texts
        self._states: dict[tuple[str, ...], torch.Tensor] = {}
        self._fixed: torch.Tensor | None = None  # (K, E) inside against(): the texts scored
        self._subset: list[int] | None = None  # inside batch_texts(): the training texts used

    def __getstate__(self) -> dict:
        """Pickled and deep-copied without the locked states' cache (computed again on use)."""
        return {**self.__dict__, "_states": {}}

    # ------------------------------------------------------------------ training set-up
    def apply_tuning(self) -> None:
        """The text encoder trains as ``--text-tune`` says, whatever ``--tune`` says for the body
        (frozen: nothing; lora: its adapters; full: all); its projection always trains."""
        from ..tuning import ADAPTER_MARK

        for name, p in self.text.encoder.named_parameters():
            p.requires_grad_(self.text_tune == "full" or
                             (self.text_tune == "lora" and ADAPTER_MARK in f".{name}"))

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Pretrained weights here (the text encoder): they train at the body's learning rate."""
        return list(self.text.encoder.parameters())

    def frozen_keys(self, prefix: str) -> set[str]:
        """State-dict keys not worth saving: a locked encoder (or a LoRA encoder's base) is the
        pretrained one, checked by its fingerprint when the model is loaded."""
        from ..tuning import ADAPTER_MARK

        if self.text_tune == "full":
            return set()
        return {f"{prefix}text.encoder.{k}" for k in self.text.encoder.state_dict()
                if ADAPTER_MARK not in f".{k}"}

    # ------------------------------------------------------------------ embeddings
    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def embed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Body states (B, S, D) -> normalised target embeddings (B, E)."""
        return F.normalize(self.proj(hidden.mean(dim=1)), dim=-1)

    def _ensemble(self, pooled: torch.Tensor, owners: torch.Tensor, k: int) -> torch.Tensor:
        """Prompt embeddings (N, D) of ``k`` groups -> (k, E): normalise, average, normalise."""
        e = F.normalize(self.text(pooled), dim=-1)  # (N, E)
        sums = torch.zeros(k, e.shape[1], dtype=e.dtype, device=e.device).index_add_(0, owners, e)
        return F.normalize(sums, dim=-1)

    def text_embeddings(self, groups: Sequence[Sequence[str]]) -> torch.Tensor:
        """Normalised prompt-ensemble embeddings (K, E) of K groups of sentences."""
        flat = [t for g in groups for t in g]
        owners = torch.tensor([i for i, g in enumerate(groups) for _ in g],
                              device=self.proj.weight.device)
        return self._ensemble(self.text.pooled(flat), owners, len(groups))

    def _locked_states(self, flat: list[str]) -> torch.Tensor:
        """A locked encoder's states (N, D) of ``flat``, computed once per text set (in chunks:
        a caption per sample can mean thousands of texts)."""
        key = tuple(flat)
        states = self._states.get(key)
        if states is None or states.device != self.proj.weight.device:
            was = self.text.encoder.training
            self.text.encoder.eval()  # a fixed function: no dropout in the cached states
            with torch.no_grad():
                states = torch.cat([self.text.pooled(flat[i: i + LOCKED_CHUNK])
                                    for i in range(0, len(flat), LOCKED_CHUNK)]).float()  # (N, D)
                # float: states computed under bf16 autocast must not meet fp32 weights outside it
            self.text.encoder.train(was)
            self._states[key] = states
        return states

    def _group_embeddings(self, groups: Sequence[Sequence[str]]) -> torch.Tensor:
        """(K, E) for groups of sentences: a locked encoder's states come from the cache."""
        if self.text_tune != "frozen":
            return self.text_embeddings(groups)
        owners = torch.tensor([i for i, g in enumerate(groups) for _ in g], device=self.proj.weight.device)
        return self._ensemble(self._locked_states([t for g in groups for t in g]), owners, len(groups))

    def class_embeddings(self) -> torch.Tensor:
        """(K, E) for the training class texts; a locked encoder's states are computed once."""
        return self._group_embeddings(self.class_texts)

    @contextmanager
    def against(self, groups: Sequence[Sequence[str]]) -> Iterator[None]:
        """Logits against ``groups`` instead of the training texts inside the block (a split
        scored on its own captions). Their embeddings are computed once on entry, without
        gradients and dropout: once per validation when the text encoder trains; a locked
        encoder's states once in all (cached by text set)."""
        was = self.text.training
        self.text.eval()
        try:
            with torch.no_grad():
                self._fixed = self._group_embeddings(groups)
        finally:
            self.text.train(was)
        try:
            yield
        finally:
            self._fixed = None

    @contextmanager
    def batch_texts(self, target: torch.Tensor) -> Iterator[torch.Tensor]:
        """One training step against the batch's own training texts only: logits (B, B') for
        its B' distinct targets, with gradients into the text tower. Yields the targets as
        indices among those B' (the in-batch loss gathers the same columns either way)."""
        ids, inv = torch.unique(target, return_inverse=True)
        self._subset = ids.tolist()
        try:
            yield inv
        finally:
            self._subset = None

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """(B, S, D) -> logits over the class texts (B, K), over the texts of ``against``, or
        over the batch's own texts inside ``batch_texts``."""
        z = self.embed(hidden)  # (B, E)
        if self._fixed is not None:
            t = self._fixed  # (K', E)
        elif self._subset is not None:
            t = self._group_embeddings([self.class_texts[i] for i in self._subset])  # (B', E)
        else:
            t = self.class_embeddings()  # (K, E)
        return self.scale() * z @ t.T
