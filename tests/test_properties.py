"""Property tests (hypothesis) over the documented input limits.

Limits: 1-D series of length 1..2000, 2-D grids up to 64 x 64, 1..4 channels, max_tokens 1..64.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transmodal.models.bodies import Body, load_body
from transmodal.data import as_inputs, check_xy, load_dataset
from transmodal.models.embedder import Embedder
from transmodal.errors import DataError
from transmodal.models.heads import DenseHead
from transmodal.models.model import ModelSpec, build_model

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPATIAL = st.one_of(st.tuples(st.integers(1, 2000)),
                    st.tuples(st.integers(1, 64), st.integers(1, 64)))

_BODIES: dict[str, Body] = {}


def body(path: str) -> Body:
    if path not in _BODIES:
        _BODIES[path] = load_body(path).eval()
    return _BODIES[path]


@settings(max_examples=25, **SETTINGS)
@given(spatial=SPATIAL, channels=st.integers(1, 4), max_tokens=st.integers(1, 64),
       family=st.sampled_from(["bert", "vit"]))
@torch.no_grad()
def test_any_shape_gives_tokens_the_body_accepts(tiny_bodies, spatial, channels, max_tokens, family):
    b = body(tiny_bodies[family])
    emb = Embedder(channels, spatial, b.embed_dim, min(max_tokens, b.max_tokens), b.input_token_norm())
    tokens = emb(torch.randn(2, channels, *spatial))  # (B, S, D)
    n_tokens = math.prod(emb.grid)
    assert tokens.shape == (2, n_tokens, b.embed_dim) and 1 <= n_tokens <= max_tokens
    hidden, grid = b(tokens, emb.grid)  # (B, S', D')
    assert hidden.shape == (2, math.prod(grid), b.out_dim)
    assert torch.isfinite(hidden).all()
    head = DenseHead(b.out_dim, 3, spatial, b.output_grid(emb.grid))
    assert head(hidden, grid).shape == (2, 3, *spatial)  # exactly the input grid, no more


@settings(max_examples=8, **SETTINGS)
@given(spatial=SPATIAL, channels=st.integers(1, 4), max_tokens=st.integers(1, 64),
       family=st.sampled_from(["bert", "vit"]))
@torch.no_grad()
def test_dense_model_returns_the_input_grid(tiny_bodies, spatial, channels, max_tokens, family):
    spec = ModelSpec(task="dense", n_outputs=2, in_channels=channels, spatial=list(spatial),
                     body=tiny_bodies[family], max_tokens=max_tokens)
    model = build_model(spec).eval()
    assert model(torch.randn(2, channels, *spatial)).shape == (2, 2, *spatial)


BAD = st.sampled_from([np.nan, np.inf, -np.inf])


@settings(max_examples=25, **SETTINGS)
@given(n=st.integers(2, 12), shape=st.sampled_from([(7,), (2, 9), (3, 4, 5)]), bad=BAD, data=st.data())
def test_non_finite_x_never_passes(n, shape, bad, data):
    x = np.random.default_rng(0).normal(size=(n, *shape))
    where = tuple(data.draw(st.integers(0, s - 1)) for s in x.shape)
    x[where] = bad
    y = np.array([0, 1] * n)[:n]
    with pytest.raises(DataError, match="NaN or inf"):
        load_dataset((x, y))
    with pytest.raises(DataError, match="NaN or inf"):
        check_xy(as_inputs(x, None)[0], y)


@settings(max_examples=25, **SETTINGS)
@given(n=st.integers(2, 12), kind=st.sampled_from(["regression", "multi", "dense"]), bad=BAD, data=st.data())
def test_non_finite_y_never_passes(n, kind, bad, data):
    x = np.zeros((n, 1, 6), np.float32)
    y = {"regression": np.zeros(n), "multi": np.zeros((n, 3)), "dense": np.zeros((n, 6))}[kind]
    y[tuple(data.draw(st.integers(0, s - 1)) for s in y.shape)] = bad
    with pytest.raises(DataError, match="NaN or inf"):
        load_dataset((x, y))


@settings(max_examples=15, **SETTINGS)
@given(lengths=st.lists(st.integers(2, 40), min_size=2, max_size=8, unique=True), data=st.data())
def test_non_finite_in_variable_length_series_never_passes(lengths, data):
    rng = np.random.default_rng(0)
    series = [rng.normal(size=n) for n in lengths]
    i = data.draw(st.integers(0, len(series) - 1))
    series[i][data.draw(st.integers(0, lengths[i] - 1))] = np.nan
    y = np.array([0, 1] * len(series))[: len(series)]
    with pytest.raises(DataError, match="NaN or inf"):
        load_dataset((series, y))


@settings(max_examples=10, **SETTINGS)
@given(n=st.integers(2, 8), data=st.data())
def test_missing_labels_never_pass(n, data):
    y = np.array(["a", "b"] * n, dtype=object)[:n]
    y[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([None, float("nan")]))
    with pytest.raises(DataError, match="missing labels"):
        load_dataset((np.zeros((n, 5)), y))
