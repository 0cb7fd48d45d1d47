"""Source references: labelled features of the data the body was pretrained on.

Alignment needs to know what the body's own inputs look like. A source reference is a set
of labelled feature vectors ``(xs (N, D), ys (N,))`` in the space the first transformer block
sees (after the body's embedding module), mean-pooled per example:

- **text bodies**: chunks of real English prose through the body's tokenizer and its own
  embedding module. Offline default: CPython's ``pydoc_data.topics`` (help texts keyed by
  topic; the topic is the label). A user file (``.txt`` lines ``label<TAB>text``, or a CSV
  with ``text`` and ``label`` columns) works the same way.
- **image bodies (ViT, Swin)**: real images through the body's own patch embedding.
  Offline default: ``sklearn.datasets.load_digits`` (the digit is the label).

Features are computed once per body and cached on disk (``$TRANSMODAL_CACHE``, default
``~/.cache/transmodal/sources``), keyed by the body's config and weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..models.bodies import Body
from ..errors import ConfigError

CHUNK_TOKENS = 32  # tokens per text example
MAX_PER_CLASS = 60  # examples per label, so no topic dominates
MIN_PER_CLASS = 4  # labels with fewer examples are dropped (class covariances need a few points)


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSMODAL_CACHE", Path.home() / ".cache" / "transmodal" / "sources"))


def source_reference(body: Body, body_path: str, source: str = "default",
                     max_points: int = 5000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached ``(xs (N, D) float32, ys (N,) int64)``, on the CPU, for this body and source
    (wherever the body sits: the cache and its key do not depend on the device)."""
    key = _cache_key(body, body_path, source, max_points, seed)
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return torch.from_numpy(f["xs"]), torch.from_numpy(f["ys"])
    build = _BUILDERS.get(body.source_modality)
    if build is None:
        raise ConfigError(f"a {body.family} body has no source reference to align to; use --align none")
    xs, ys = build(body, body_path, source, max_points, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # per process: search workers share the cache
    np.savez(tmp, xs=xs.numpy(), ys=ys.numpy())
    os.replace(tmp, path)
    return xs, ys


def _cache_key(body: Body, body_path: str, source: str, max_points: int, seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(body.stored_config(), sort_keys=True, default=str).encode())
    first = next(body.parameters()).detach().float().cpu()
    h.update(first.flatten()[:4096].numpy().tobytes())  # different weights, different cache
    h.update(f"{source}|{max_points}|{seed}|{CHUNK_TOKENS}|{MAX_PER_CLASS}".encode())
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------- text


def _text_source(source: str) -> tuple[list[str], list[str]]:
    if source == "default":
        from pydoc_data.topics import topics

        return list(topics.values()), list(topics.keys())
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"source reference {source!r} does not exist; give a .txt "
                          "(label<TAB>text per line) or .csv (text, label columns) file")
    if path.suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        if not {"text", "label"} <= set(frame.columns):
            raise ConfigError(f"{path}: a source CSV needs 'text' and 'label' columns")
        return frame["text"].astype(str).tolist(), frame["label"].astype(str).tolist()
    texts, labels = [], []
    for line in path.read_text().splitlines():
        label, sep, text = line.partition("\t")
        if sep and text.strip():
            labels.append(label)
            texts.append(text)
    if not texts:
        raise ConfigError(f"{path}: no 'label<TAB>text' lines found")
    return texts, labels


@torch.no_grad()
def _embed_texts(body: Body, body_path: str, texts: list[str], labels: list[str],
                 max_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(body_path)
    except Exception as e:  # no tokenizer files, or none known for this model
        raise ConfigError(
            f"body {body_path!r} has no tokenizer ({type(e).__name__}), so no text source "
            "reference can be built; use a body folder that includes its tokenizer, or --align none"
        ) from None
    if len(tok) < 1000:  # transformers builds an empty-vocab tokenizer for folders without one
        raise ConfigError(
            f"the tokenizer of body {body_path!r} has only {len(tok)} tokens (its folder holds no "
            "tokenizer files?), so text would be all unknown tokens; save the tokenizer with the "
            "body, or use --align none"
        )
    rng = np.random.default_rng(seed)
    chunks: dict[str, list[list[int]]] = {}
    for text, label in zip(texts, labels):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pieces = [ids[i: i + CHUNK_TOKENS] for i in range(0, len(ids) - CHUNK_TOKENS + 1, CHUNK_TOKENS)]
        chunks.setdefault(label, []).extend(pieces)
    chunks = {k: v for k, v in chunks.items() if len(v) >= MIN_PER_CLASS}
    per_class = min(MAX_PER_CLASS, max(MIN_PER_CLASS, max_points // max(1, len(chunks))))
    ids_list, ys = [], []
    for ci, label in enumerate(sorted(chunks)):
        pick = rng.permutation(len(chunks[label]))[:per_class]
        ids_list += [chunks[label][i] for i in pick]
        ys += [ci] * len(pick)
    if len(set(ys)) < 2:
        raise ConfigError("the text source reference has fewer than 2 labels with enough text")
    ids = torch.tensor(ids_list)  # (N, CHUNK_TOKENS)
    device = next(body.parameters()).device  # the body may already sit on a GPU
    feats = []
    for i in range(0, len(ids), 256):
        emb = body.embed_ids(ids[i: i + 256].to(device))  # (n, T, D)
        feats.append(emb.mean(1).float().cpu())
    return torch.cat(feats), torch.tensor(ys, dtype=torch.int64)


# ----------------------------------------------------------------------------- images


@torch.no_grad()
def _embed_images(body: Body, source: str, max_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if source != "default":
        raise ConfigError("image bodies take the default source reference (sklearn digits) for now")
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(digits.images))[:max_points]
    imgs = torch.tensor(digits.images[pick], dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    patch = body.pixel_patch()
    side = (4 * patch[0], 4 * patch[1])  # a 4x4 patch grid per image
    imgs = torch.nn.functional.interpolate(imgs, size=side, mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    imgs = (imgs.expand(-1, 3, -1, -1) - mean) / std  # ImageNet normalisation
    device = next(body.parameters()).device
    feats = []
    for i in range(0, len(imgs), 256):
        feats.append(body.embed_pixels(imgs[i: i + 256].to(device)).mean(1).float().cpu())
    return torch.cat(feats), torch.tensor(digits.target[pick], dtype=torch.int64)


def _text_reference(body: Body, body_path: str, source: str, max_points: int, seed: int):
    texts, labels = _text_source(source)
    return _embed_texts(body, body_path, texts, labels, max_points, seed)


def _image_reference(body: Body, body_path: str, source: str, max_points: int, seed: int):
    return _embed_images(body, source, max_points, seed)


# a body's ``source_modality`` -> how its source reference is made
_BUILDERS = {"text": _text_reference, "image": _image_reference}
