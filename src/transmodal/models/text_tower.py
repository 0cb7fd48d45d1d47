"""The text tower of a contrastive model: sentences -> embeddings in the shared space.

A pretrained text encoder (a registered text body, MiniLM by default) mean-pooled over its
tokens with the attention mask (what sentence-transformers does for all-MiniLM-L6-v2), then a
linear projection to the shared space. Locked (``--text-tune frozen``, the LiT setting) by
default: with a few hundred pairs, training the encoder would forget the language knowledge
that zero-shot prediction needs; the projection always trains.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError


def load_text_encoder(name: str) -> nn.Module:
    """The text encoder for ``--text-body name``: the body itself when it is a text encoder, or
    the text half of a model that has one (a CLIP folder's text tower)."""
    from .bodies import family_of

    family = family_of(name)
    encoder = family.load_text_encoder(name)
    if encoder is None:
        raise ConfigError(f"--text-body {name!r} is a {family.family} body with no text encoder; "
                          "use a text model such as minilm (or a CLIP model folder)")
    return encoder


def load_tokenizer(path: str):
    """The tokenizer of the text model in folder/hub id ``path`` (the one tokenizer path of the
    package: the contrastive text tower and the generate head's decoder both use it)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # no tokenizer files, or none known for this model
        raise ConfigError(f"text body {path!r} has no tokenizer ({type(e).__name__}); use a model "
                          "folder that includes one") from None


class TextTower(nn.Module):
    def __init__(self, encoder: nn.Module, path: str, embed_dim: int) -> None:
        super().__init__()
        self.encoder = encoder  # a body with sentence_embedding(ids, mask): load_text_encoder
        self.path = path  # where its tokenizer lives
        self.proj = nn.Linear(encoder.out_dim, embed_dim)
        self._tokenizer = None

    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (N, T); a text longer than the encoder's limit is an error."""
        tok = self.tokenizer()
        enc = tok(list(texts), padding=True, return_tensors="pt")
        if enc["input_ids"].shape[1] > self.encoder.max_tokens:
            self._too_long(texts, enc["attention_mask"].sum(1).tolist())
        return enc["input_ids"], enc["attention_mask"]

    def check_lengths(self, texts: Sequence[str]) -> None:
        """Every text within the encoder's token limit (checked before training starts)."""
        lengths = [len(ids) for ids in self.tokenizer()(list(texts))["input_ids"]]
        if lengths and max(lengths) > self.encoder.max_tokens:
            self._too_long(texts, lengths)

    def _too_long(self, texts: Sequence[str], lengths: list[int]) -> None:
        worst = max(range(len(lengths)), key=lengths.__getitem__)
        raise DataError(f"the text {texts[worst][:60]!r} is {lengths[worst]} tokens long; the "
                        f"text tower takes at most {self.encoder.max_tokens}: shorten it")

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """The encoder's sentence embeddings of ``texts``: (N, D)."""
        device = self.proj.weight.device
        ids, mask = self.tokenize(texts)
        return self.encoder.sentence_embedding(ids.to(device), mask.to(device))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled encoder states (N, D) -> (N, E) in the shared space (not normalised)."""
        return self.proj(pooled)
