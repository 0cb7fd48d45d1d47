"""--dense-skip linear: a linear path from each input patch to its output patch, past the body."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transmodal
from transmodal.config import FitConfig
from transmodal.errors import ConfigError
from transmodal.models.model import ModelSpec, build_model

SPATIAL = st.one_of(st.tuples(st.integers(1, 300)), st.tuples(st.integers(1, 24), st.integers(1, 24)))
FAST = dict(epochs=2, batch_size=8, max_tokens=8, progress=False)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spatial=SPATIAL, max_tokens=st.integers(1, 64), family=st.sampled_from(["bert", "vit"]))
@torch.no_grad()
def test_skip_folds_each_patch_back_to_its_own_place(tiny_bodies, spatial, max_tokens, family):
    """With the body's read-out at zero and the skip set to copy each patch, the model returns
    its input exactly: the skip's patches land where the body's tokens' patches land, for any
    grid (padding included), 1-D and 2-D."""
    spec = ModelSpec(task="dense", n_outputs=1, in_channels=1, spatial=list(spatial),
                     body=tiny_bodies[family], max_tokens=max_tokens, dense_skip="linear")
    model = build_model(spec).eval()
    head = model.head
    x = torch.randn(2, 1, *spatial)
    skip = head.skip
    assert not skip.weight.any() and not skip.bias.any()  # starts at zero: the body alone
    y0 = model(x)
    head.skip = None
    np.testing.assert_array_equal(y0.numpy(), model(x).numpy())
    head.skip = skip
    head.fc.weight.zero_()
    head.fc.bias.zero_()
    n = skip.weight.shape[0]  # one output per position of the patch
    skip.weight.copy_(torch.eye(n).reshape(skip.weight.shape))  # copy position j to output j
    np.testing.assert_allclose(model(x).numpy(), x.numpy(), atol=1e-6)


def test_a_fit_with_the_skip_is_seeded_saved_and_differs(tiny_bodies, tmp_path):
    g = np.random.default_rng(0)
    x = g.standard_normal((40, 1, 32)).astype(np.float32)
    y = (3 * x + np.roll(x, 1, axis=2) ** 2).astype(np.float32)
    opts = dict(task="dense", body=tiny_bodies["bert"], seed=0, **FAST)
    run = transmodal.fit((x, y), out=tmp_path / "run", dense_skip="linear", **opts)
    pred = run.predict(x)
    assert pred.shape == y.shape
    assert np.array_equal(pred, transmodal.fit((x, y), dense_skip="linear", **opts).predict(x))
    assert np.array_equal(pred, transmodal.load(tmp_path / "run").predict(x))
    assert not np.array_equal(pred, transmodal.fit((x, y), dense_skip="none", **opts).predict(x))
    spec = json.loads((tmp_path / "run" / "model" / "model.json").read_text())["spec"]
    assert spec["dense_skip"] == "linear"


def test_model_files_without_the_field_load_without_a_skip(tiny_bodies):
    d = ModelSpec(task="dense", n_outputs=1, in_channels=1, spatial=[16],
                  body=tiny_bodies["bert"]).to_dict()
    del d["dense_skip"]  # a file written before the option
    assert build_model(ModelSpec.from_dict(d)).head.skip is None


def test_an_unknown_value_is_refused():
    with pytest.raises(ConfigError, match="dense_skip|dense-skip"):
        FitConfig(dense_skip="conv")
