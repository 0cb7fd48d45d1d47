"""Contrastive (CLIP): bind the data to words. Each class is a text (its name through prompt
templates, or its descriptions); the model learns to put a sample's embedding next to its
class text's embedding (``models/heads/contrastive.py``), so it can later classify among labels
it never trained on, written as words.

Loss: symmetric InfoNCE with in-batch negatives, where samples that share a text (same class)
are positives of each other, not negatives (the UniCL form: the target distribution of a row or
column is uniform over its positives). With every text distinct it is CLIP's loss exactly.

A caption per sample (``text_train`` / ``--text-column``, :meth:`Contrastive.use_captions`):
each distinct caption of a split is a "class" of that split, so identical captions stay
positives of each other. A split's targets are the indices of its captions among its own
distinct captions (sorted, ``np.unique``); the training split's distinct captions are the
model's texts. Validation and test splits are scored on their own captions (new texts, embedded
inside ``ContrastiveHead.against``) by retrieval recall@k in both directions, and the best
epoch is the one with the best mean recall@1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import contextlib
from typing import ContextManager

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import register_task
from .classification import Classification

DEFAULT_TEMPLATES = ("{}",)
RECALL_AT = (1, 5, 10)  # recall@k reported for captioned splits


@register_task
class Contrastive(Classification):
    name = "contrastive"
    head = "contrastive"
    primary = ("accuracy", True)  # zero-shot accuracy among the training class texts
    infer_rank = None  # chosen by --objective contrastive, never by --task auto
    objective = "contrastive"
    augment_targets = "texts"  # label-preserving transforms only (the loss couples a batch)
    series_embedder = "patch"  # rocket is measured on class read-outs only, not on text binding

    def __init__(self, classes: list[Any] | None = None, captions: bool = False) -> None:
        super().__init__(classes)
        self.templates: list[str] = list(DEFAULT_TEMPLATES)
        self.descriptions: dict[str, list[str]] = {}
        self.text: dict[str, Any] = {}
        self.captions = False
        if captions:
            self.use_captions()

    def use_captions(self) -> None:
        """Targets are a caption per sample (see the module docstring), not class labels."""
        if self.descriptions:
            raise ConfigError("--descriptions gives texts of classes; with a caption per sample "
                              "(text_train or --text-column) drop it")
        self.captions = True
        self.primary = ("recall_at_1", True)  # mean of both directions on the validation captions
        self.view = "retrieval"

    def configure(self, cfg: Any) -> None:
        self.templates = list(cfg.templates or DEFAULT_TEMPLATES)
        if cfg.descriptions:
            self.descriptions = read_descriptions(cfg.descriptions)
        self.text = {"body": cfg.text_body, "tune": cfg.text_tune, "embed_dim": int(cfg.embed_dim)}

    def check_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.captions:  # non-blank texts, one per sample: checked where they were read
            if len(np.unique(y)) < 2:
                raise DataError("every training caption is the same text; binding samples to "
                                "words needs at least 2 different captions")
            return
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

    def check_eval_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        if not self.captions:  # captions: any texts (their own split's)
            super().check_eval_targets(x, y)

    def stratify(self, y: np.ndarray) -> np.ndarray | None:
        return None if self.captions else y

    def min_validation(self, y: np.ndarray) -> int:
        return 2 if self.captions else super().min_validation(y)  # recall among >= 2 captions

    def fit_targets(self, x: np.ndarray, y: np.ndarray) -> "Contrastive":
        if not self.captions:
            return super().fit_targets(x, y)
        self.classes = np.unique(y).tolist()  # the distinct training captions: the model's texts
        return self

    def state(self) -> dict[str, Any]:
        return {**super().state(), "captions": True} if self.captions else super().state()

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Contrastive":
        return cls(d.get("classes", []), captions=bool(d.get("captions", False)))

    def encode(self, y: np.ndarray) -> np.ndarray:
        """Class ids; captions: each caption's index among the distinct captions of ``y`` itself."""
        if not self.captions:
            return super().encode(y)
        return np.unique(np.asarray(y), return_inverse=True)[1].reshape(-1).astype(np.int64)

    def alignment_labels(self, target: np.ndarray, k: int, seed: int) -> np.ndarray:
        if self.captions:
            raise ConfigError("--align with a caption per sample is not built (alignment needs "
                              "classes or clusters, not one text per sample); use --align none")
        return super().alignment_labels(target, k, seed)

    def scoring(self, model: Any, y_true: np.ndarray) -> ContextManager[None]:
        """Captions: the outputs are logits against the split's own distinct captions."""
        if not self.captions:
            return contextlib.nullcontext()
        return model.head.against([[t] for t in np.unique(np.asarray(y_true)).tolist()])

    def training_batch(self, model: Any, target: torch.Tensor) -> ContextManager[torch.Tensor]:
        """Captions with a trained text encoder: a step embeds the batch's own distinct captions
        (not every training caption); a locked encoder's states are cached, so all are cheap."""
        if not self.captions or model.head.text_tune == "frozen":
            return contextlib.nullcontext(target)
        return model.head.batch_texts(target)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray,
              sample_weight: np.ndarray | None = None) -> dict[str, float]:
        """Captions: predictions are the closest caption of the split (sample -> text recall@1)."""
        if not self.captions:
            return super().score(y_true, y_pred, sample_weight)
        return {"sample_to_text_recall_at_1": float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))}

    def score_outputs(self, y_true: np.ndarray, raw: np.ndarray, *weight: np.ndarray) -> dict[str, float]:
        if not self.captions:
            return super().score_outputs(y_true, raw, *weight)
        return retrieval_recall(raw, self.encode(y_true))

    def check_model(self, model: Any, eval_targets: list[np.ndarray | None]) -> None:
        """Every text within the text tower's token limit, before anything is written."""
        texts = [t for g in model.head.class_texts for t in g]
        if self.captions:
            texts += [t for y in eval_targets if y is not None for t in np.unique(y).tolist()]
        model.head.text.check_lengths(texts)

    def class_texts(self, classes: list[Any] | None = None) -> list[list[str]]:
        """The sentences of each class: its descriptions, else its name in every template;
        captions are sentences already (no templates)."""
        if self.captions:
            return [[str(c)] for c in (self.classes if classes is None else classes)]
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


def retrieval_recall(logits: np.ndarray, text_of: np.ndarray, ks: tuple[int, ...] = RECALL_AT
                     ) -> dict[str, float]:
    """Recall@k both ways from the (N, K) similarities of N samples to K distinct texts;
    ``text_of`` (N,) is each sample's own text. Sample -> text: the own text among the k most
    similar texts. Text -> sample: one of the samples with that text among its k most similar
    samples. A tie counts for the positive. ``recall_at_k`` is the mean of the two."""
    logits = np.asarray(logits, dtype=np.float64)
    n, k_texts = logits.shape
    own = logits[np.arange(n), text_of]  # (N,)
    rank_s2t = (logits > own[:, None]).sum(1)  # texts strictly better than the own one
    positive = np.zeros_like(logits, dtype=bool)
    positive[np.arange(n), text_of] = True
    best_pos = np.where(positive, logits, -np.inf).max(0)  # (K,): the best sample of each text
    rank_t2s = (logits > best_pos[None, :]).sum(0)  # samples strictly better than it
    out: dict[str, float] = {}
    for k in ks:
        s2t, t2s = float((rank_s2t < k).mean()), float((rank_t2s < k).mean())
        out.update({f"recall_at_{k}": (s2t + t2s) / 2, f"sample_to_text_recall_at_{k}": s2t,
                    f"text_to_sample_recall_at_{k}": t2s})
    return out


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
