"""Contrastive (CLIP): bind the data to words. Each class is a text (its name through prompt
templates, or its descriptions); the model learns to put a sample's embedding next to its
class text's embedding (``models/heads/contrastive.py``), so it can later classify among labels
it never trained on, written as words.

Loss: symmetric InfoNCE with in-batch negatives, where samples that share a text (same class)
are positives of each other, not negatives (the UniCL form: the target distribution of a row or
column is uniform over its positives). With every text distinct it is CLIP's loss exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import register_task
from .classification import Classification

DEFAULT_TEMPLATES = ("{}",)


@register_task
class Contrastive(Classification):
    name = "contrastive"
    head = "contrastive"
    primary = ("accuracy", True)  # zero-shot accuracy among the training class texts
    infer_rank = None  # chosen by --objective contrastive, never by --task auto
    objective = "contrastive"
    augment_targets = "texts"  # label-preserving transforms only (the loss couples a batch)

    def __init__(self, classes: list[Any] | None = None) -> None:
        super().__init__(classes)
        self.templates: list[str] = list(DEFAULT_TEMPLATES)
        self.descriptions: dict[str, list[str]] = {}
        self.text: dict[str, Any] = {}

    def configure(self, cfg: Any) -> None:
        self.templates = list(cfg.templates or DEFAULT_TEMPLATES)
        if cfg.descriptions:
            self.descriptions = read_descriptions(cfg.descriptions)
        self.text = {"body": cfg.text_body, "tune": cfg.text_tune, "embed_dim": int(cfg.embed_dim)}

    def check_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        if y.dtype.kind == "f":
            raise DataError("the contrastive objective needs class names (strings) as labels, or "
                            "integer codes with --descriptions; these labels are floats")
        super().check_targets(x, y)
        names = [str(v) for v in np.unique(y).tolist()]
        if any(not n.strip() for n in names):
            raise DataError("a label is empty; every class needs words for the text tower")
        if not self.descriptions and y.dtype.kind in "iub":
            raise DataError("integer labels say nothing in words: give --descriptions FILE.yaml "
                            "mapping each code to a description, or use string labels")
        missing = [n for n in names if self.descriptions and n not in self.descriptions]
        if missing:
            raise DataError(f"--descriptions has no text for the class(es) {missing[:5]}; "
                            "describe every class (or none)")

    def class_texts(self, classes: list[Any] | None = None) -> list[list[str]]:
        """The sentences of each class: its descriptions, else its name in every template."""
        out = []
        for c in self.classes if classes is None else classes:
            name = str(c)
            out.append(list(self.descriptions[name]) if name in self.descriptions
                       else fill_templates(self.templates, name))
        return out

    def spec_extras(self) -> dict[str, Any]:
        return {"text": {**self.text, "class_texts": self.class_texts(),
                         "templates": list(self.templates)}}

    def loss(self, out: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """``out`` (B, K): scaled cosine logits of each sample against every class text."""
        if weight is not None:
            raise ConfigError("sample weights are not built for the contrastive objective (its "
                              "loss couples the samples of a batch); fit without them")
        logits = out.float()[:, target]  # (B, B): sample i against the text of sample j
        same = (target[:, None] == target[None, :]).to(logits.dtype)  # positives, symmetric
        soft = same / same.sum(1, keepdim=True)
        to_text = -(soft * logits.log_softmax(dim=1)).sum(1).mean()
        to_sample = -(soft * logits.log_softmax(dim=0)).sum(0).mean()
        return (to_text + to_sample) / 2


def fill_templates(templates: list[str], label: str) -> list[str]:
    return [t.replace("{}", label) for t in templates]


def check_templates(templates: list[str]) -> None:
    for t in templates:
        if "{}" not in t:
            raise ConfigError(f"--template {t!r} has no {{}} where the label goes, e.g. "
                              "'a recording of {}'")


def read_templates(path: str) -> list[str]:
    """One template per non-empty line of a text file, or a YAML list."""
    from ..config import read_yaml

    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        values = read_yaml(p, f"--templates-file {path} does not exist")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{path} must hold a YAML list of template strings")
        return values
    if not p.is_file():
        raise ConfigError(f"--templates-file {path} does not exist")
    return [line.strip() for line in p.read_text().splitlines() if line.strip()]


def read_descriptions(path: str) -> dict[str, list[str]]:
    """YAML ``label: description`` or ``label: [description, ...]`` (a class may have several)."""
    from ..config import read_yaml

    values = read_yaml(path, f"--descriptions {path} does not exist")
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must map each label to a description (or a list of them)")
    out = {}
    for label, text in values.items():
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ConfigError(f"{path}: the description of {label!r} must be a non-empty text or list of texts")
        out[str(label)] = texts
    return out
