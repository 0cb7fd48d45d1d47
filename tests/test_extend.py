"""How to extend transmodal (CONTRIBUTING.md): a task, a head, a body family and an alignment
objective, each registered from this file without editing the package, then used by ``fit``.

Each test registers into a copy of the registry (monkeypatch), so the toy parts do not leak
into other tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import transmodal
from transmodal.errors import ConfigError

FAST = dict(epochs=2, batch_size=8, progress=False, max_tokens=16)


@pytest.fixture
def registries(monkeypatch):
    """Fresh copies of every registry for one test."""
    from transmodal import tasks
    from transmodal.align import objectives
    from transmodal.models import bodies, heads

    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))
    monkeypatch.setattr(heads, "_HEADS", dict(heads._HEADS))
    monkeypatch.setattr(bodies, "_FAMILIES", dict(bodies._FAMILIES))
    monkeypatch.setattr(objectives, "_OBJECTIVES", dict(objectives._OBJECTIVES))


def test_a_new_task_and_head_from_user_code(registries, tiny_bodies, toy_series, tmp_path):
    from transmodal.models.heads import register_head
    from transmodal.tasks import register_task
    from transmodal.tasks.regression import Regression

    @register_head("max-pooled")
    class MaxPooledHead(nn.Module):
        """Max over tokens, then linear: (B, S, D) -> (B, K)."""

        @classmethod
        def build(cls, body, grid, spec):
            return cls(body.out_dim, spec.n_outputs)

        def __init__(self, dim: int, n_outputs: int) -> None:
            super().__init__()
            self.fc = nn.Linear(dim, n_outputs)

        def forward(self, hidden, grid):
            return self.fc(hidden.amax(dim=1))

    @register_task
    class MedianRegression(Regression):
        """Regression trained on the L1 loss, selected on the mean absolute error."""

        name = "median-regression"
        head = "max-pooled"
        primary = ("mae", False)
        infer_rank = None  # only when asked for: --task median-regression

        def loss(self, out, target):
            return torch.nn.functional.l1_loss(out.float(), target)

        def score(self, y_true, y_pred):
            err = np.abs(np.asarray(y_true, float).reshape(len(y_true), -1)
                         - np.asarray(y_pred, float).reshape(len(y_pred), -1))
            return {"mae": float(err.mean())}

    x, _ = toy_series
    y = x[:, :8].mean(1) * 3.0 + 1.0
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"],
                         task="median-regression", **FAST)
    assert run.task == "median-regression" and isinstance(run.model.head, MaxPooledHead)
    assert set(run.summary["metrics"]["val"]) == {"mae"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("val_mae" in r for r in rows)
    again = transmodal.load(tmp_path / "run")  # rebuilt from the registry by name
    np.testing.assert_array_equal(again.predict(x), run.predict(x))
    assert again.evaluate(x, y)["mae"] == pytest.approx(run.evaluate(x, y)["mae"])


def test_a_new_body_family_from_user_code(registries, toy_series, tmp_path):
    from transmodal.models.bodies import Body, register_body

    @register_body
    class ToyConvBody(Body):
        """A stack of residual 1-D convolutions over the token sequence."""

        family = "toy-conv"
        names = ("toy-conv",)

        def __init__(self, width: int = 16, depth: int = 3) -> None:
            super().__init__()
            self.width, self.depth = width, depth
            self.embed_dim = self.out_dim = width
            self.max_tokens = 512
            self.layers = nn.ModuleList(nn.Conv1d(width, width, 3, padding=1) for _ in range(depth))
            self.norm = nn.LayerNorm(width)

        @classmethod
        def load(cls, name, pretrained=True, attention_dropout=0.0):
            return cls()  # "pretrained" weights would be loaded here

        @classmethod
        def rebuild(cls, spec):
            return cls(**spec.body_config)

        def stored_config(self):
            return {"width": self.width, "depth": self.depth}

        def encode(self, tokens, grid):  # (B, S, D) -> (B, S, D)
            h = tokens.transpose(1, 2)
            for conv in self.layers:
                h = h + torch.relu(conv(h))
            return self.norm(h.transpose(1, 2)), grid

        def input_token_norm(self):
            return 1.0

        def blocks(self):
            return list(self.layers)

    x, y = toy_series
    run = transmodal.fit((x, y), out=tmp_path / "run", body="toy-conv", tune="hybrid:2", **FAST)
    body = run.model.body
    trainable = {n for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layers.2.weight", "layers.2.bias"}  # blocks 0, 1 frozen by the interface
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["spec"]["body_kind"] == "toy-conv"
    again = transmodal.load(tmp_path / "run")
    np.testing.assert_array_equal(again.predict_proba(x), run.predict_proba(x))
    with pytest.raises(ConfigError, match="toy-conv body has no source reference"):
        transmodal.fit((x, y), out=tmp_path / "aligned", body="toy-conv", align="l2", **FAST)
    assert not (tmp_path / "aligned").exists()  # refused before a run folder was made


def test_a_new_alignment_objective_from_user_code(registries, tiny_bodies, toy_series, tmp_path):
    from transmodal.align.objectives import register_alignment

    calls = []

    @register_alignment("means")
    class MeanAlignment:
        """Squared distance between the feature means of target and source."""

        def __init__(self, xs, ys, cfg):
            self.mean = xs.mean(0)  # source-only work, once

        def distance(self, xt, yt):
            calls.append(len(xt))
            return ((xt.mean(0) - self.mean) ** 2).sum()

    x, y = toy_series
    transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], align="means",
                   align_epochs=3, **FAST)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    align_rows = [r for r in rows if r["stage"] == "align"]
    assert [r["method"] for r in align_rows] == ["means"] * 3 and len(calls) == 3
    assert align_rows[-1]["distance"] < align_rows[0]["distance"]  # the embedder moved toward it


def test_registries_refuse_clashes_and_unknown_names(registries):
    from transmodal.models.bodies import family
    from transmodal.models.heads import build_head
    from transmodal.tasks import get_task, register_task
    from transmodal.tasks.classification import Classification

    with pytest.raises(ConfigError, match="already registered"):
        register_task(type("Other", (Classification,), {"name": "classification"}))
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ConfigError, match="unknown head 'nope'"):
        build_head("nope", None, (1,), None)
    with pytest.raises(ConfigError, match="unknown body family 'nope'"):
        family("nope")
    with pytest.raises(ConfigError, match="unknown --align 'nope'"):
        transmodal.FitConfig(align="nope")
