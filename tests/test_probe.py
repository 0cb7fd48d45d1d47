"""--head-init probe (LP-FT) and --dropout: the head starts as a probe fitted on frozen features."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold

import transmodal
from transmodal.engine.probe import PROBE_EPS, head_features, warm_start_head
from transmodal.errors import ConfigError
from transmodal.models.model import ModelSpec, build_model
from transmodal.tasks import get_task
from transmodal.tasks.classification import PROBE_CS
from transmodal.tasks.regression import PROBE_ALPHAS


def _model(tiny_bodies, task, x, norm="none"):
    torch.manual_seed(0)
    spec = ModelSpec(task=task.name, n_outputs=task.n_outputs, in_channels=x.shape[1],
                     spatial=list(x.shape[2:]), body=tiny_bodies["bert"], max_tokens=8,
                     head_norm=norm)
    return build_model(spec)


def _features(model, x):
    """Standardised as the probe does it: (f - mean) / sqrt(var + eps)."""
    f = head_features(model, x, 16, "cpu", contextlib.nullcontext)
    return (f - f.mean(0)) / np.sqrt(f.var(0) + PROBE_EPS)


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_head_predicts_like_the_fitted_logistic_regression(tiny_bodies, n_classes, norm):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 1, 32)).astype(np.float32)
    y = np.arange(36) % n_classes
    x[:, 0, :8] += y[:, None]  # class signal in the first steps
    task = get_task("classification").fit_targets(x, y)
    model = _model(tiny_bodies, task, x, norm)
    what = warm_start_head(model, task, x, task.encode(y), None, 16, "cpu", contextlib.nullcontext)
    assert what.startswith("probe (logistic regression, C=")
    feats = _features(model, x)
    ref = LogisticRegressionCV(Cs=PROBE_CS, cv=StratifiedKFold(3), scoring="neg_log_loss",
                               max_iter=2000).fit(feats, y)
    model.eval()
    with torch.no_grad():
        proba = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(proba, ref.predict_proba(feats), atol=1e-4)


def test_probe_head_of_a_regression_equals_ridge(tiny_bodies):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2, 16)).astype(np.float32)
    y = np.stack([x[:, 0].mean(1), x[:, 1].std(1)], axis=1)
    task = get_task("regression").fit_targets(x, y)
    model = _model(tiny_bodies, task, x)
    what = warm_start_head(model, task, x, task.encode(y), None, 16, "cpu", contextlib.nullcontext)
    assert what.startswith("probe (ridge, alpha=")
    feats = _features(model, x)
    ref = RidgeCV(alphas=PROBE_ALPHAS).fit(feats, task.encode(y))
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref.predict(feats), atol=1e-4)


def test_fit_with_probe_is_seeded_and_recorded(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    kw = dict(body=tiny_bodies["bert"], epochs=2, batch_size=8, max_tokens=8, progress=False,
              baselines="none", head_init="probe", head_norm="batch", dropout=0.0, seed=3)
    a = transmodal.fit((x[:30], y[:30]), test_data=(x[30:], y[30:]), out=tmp_path / "a", **kw)
    loaded = transmodal.load(tmp_path / "a")  # the FeatureNorm's statistics travel with it
    np.testing.assert_array_equal(loaded.predict_proba(x[30:]), a.predict_proba(x[30:]))
    b = transmodal.fit((x[:30], y[:30]), test_data=(x[30:], y[30:]), **kw)
    assert a.summary["head_init"].startswith("probe (logistic regression")
    np.testing.assert_array_equal(a.predict_proba(x[30:]), b.predict_proba(x[30:]))
    # the test split is never seen by the probe: other test labels, the same model
    c = transmodal.fit((x[:30], y[:30]), test_data=(x[30:], 1 - y[30:]), **kw)
    np.testing.assert_array_equal(a.predict_proba(x[30:]), c.predict_proba(x[30:]))


def test_heads_without_a_probe_start_random_and_say_so(tiny_bodies):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 1, 16)).astype(np.float32)
    y = rng.normal(size=(20, 1, 16)).astype(np.float32)  # dense targets: per-position head
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], epochs=1, batch_size=8, max_tokens=8,
                         progress=False, baselines="none", head_init="probe")
    assert run.summary["head_init"].startswith("random (the ")


def test_dropout_sets_every_dropout_layer_of_the_body(tiny_bodies):
    x = np.zeros((4, 1, 16), np.float32)
    task = get_task("classification").fit_targets(x, np.array([0, 1, 0, 1]))
    model = _model(tiny_bodies, task, x)
    drops = [m for m in model.body.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and any(m.p > 0 for m in drops)
    model.body.set_dropout(0.0)
    assert all(m.p == 0.0 for m in drops)


def test_feature_norm_takes_a_batch_of_one_in_training():
    from transmodal.models.heads.pooled import PooledHead

    head = PooledHead(4, 2, norm=True).train()
    out = head(torch.randn(1, 3, 4), (3,))  # BatchNorm alone would refuse one sample
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    assert head(torch.randn(5, 3, 4), (3,)).shape == (5, 2)


@pytest.mark.parametrize("opts, msg", [({"head_init": "lsq"}, "--head-init"),
                                       ({"head_norm": "layer"}, "--head-norm"),
                                       ({"dropout": 1.0}, "--dropout must be in")])
def test_bad_values_are_refused(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        transmodal.FitConfig(**opts)


def test_dropout_takes_a_number_or_body_and_refuses_the_rest_in_one_line():
    from transmodal.cli import main
    from transmodal.config import FitConfig

    assert FitConfig(dropout="0.2").dropout == 0.2  # text from the command line or YAML
    assert FitConfig(dropout="body").dropout == "body" and FitConfig(dropout=0).dropout == 0
    for bad, msg in [("abc", "must be a number or body"), (1.5, r"in \[0, 1\) or body")]:
        with pytest.raises(ConfigError, match=msg):
            FitConfig(dropout=bad)
    assert main(["fit", "--data", "x.npz", "--dropout", "none"]) == 2


def test_the_task_chooses_the_dropout_a_run_records(tiny_bodies, toy_series, tmp_path):
    """Unset --dropout is the task's default, written concretely to config.yaml; body keeps the
    body's own layers; a number sets them all."""
    import yaml

    from transmodal.config import FitConfig

    for task in ("classification", "regression", "dense"):
        assert get_task(task).with_defaults(FitConfig()).dropout == get_task(task).dropout
    assert get_task("dense").with_defaults(FitConfig(dropout="body")).dropout == "body"
    x, y = toy_series
    kw = dict(body=tiny_bodies["bert"], epochs=1, batch_size=8, max_tokens=8, progress=False,
              baselines="none")
    for dropout, want in [(None, "body"), ("body", "body"), (0.0, 0.0)]:
        run = transmodal.fit((x, y), out=tmp_path / str(dropout), dropout=dropout, **kw)
        assert yaml.safe_load((tmp_path / str(dropout) / "config.yaml").read_text())["dropout"] == want
        ps = {m.p for m in run.model.body.modules() if isinstance(m, torch.nn.Dropout)}
        assert ps == {0.0} if want == 0.0 else max(ps) > 0  # a number sets all; body keeps its own


def test_a_run_written_before_task_dropout_defaults_resumes_with_the_bodys_own(tiny_bodies, tmp_path,
                                                                               monkeypatch):
    """config.yaml files written before the task chose the dropout hold null: those runs
    trained with the body's own dropout, and a resume keeps it."""
    import yaml

    from transmodal.run.checkpoint import Checkpointer
    from transmodal.run.fit import resume_config

    x = np.random.default_rng(0).normal(size=(24, 1, 32)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.cumsum(x[:, 0], axis=1))  # dense
    run = tmp_path / "r"
    transmodal.fit(str(tmp_path / "d.npz"), body=tiny_bodies["bert"], out=run, epochs=1,
                   batch_size=8, max_tokens=8, progress=False, dropout=0.3)
    (run / "summary.json").unlink()  # as if stopped after a checkpoint (only the config is read)
    monkeypatch.setattr(Checkpointer, "load", lambda self: {"stage": "refine"})
    assert resume_config(run, None, None, None, False, {})[0].dropout == 0.3  # recorded: kept
    stored = yaml.safe_load((run / "config.yaml").read_text())
    stored["dropout"] = None
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    assert resume_config(run, None, None, None, False, {})[0].dropout == "body"


def test_a_task_list_sets_the_bodys_dropout_too(tiny_bodies, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 16)).astype(np.float32)
    np.savez(tmp_path / "t.npz", x_train=x, y_train=np.array([0, 1] * 12))
    run = transmodal.fit(tasks=[{"data": str(tmp_path / "t.npz")}], body=tiny_bodies["bert"],
                         text_body=tiny_bodies["bert"], epochs=1, batch_size=8, max_tokens=8,
                         head="generate", progress=False, baselines="none", dropout=0.0)
    assert {m.p for m in run.model.body.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
