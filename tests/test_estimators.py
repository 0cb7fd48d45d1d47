import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from transmodal import TransmodalClassifier, TransmodalRegressor


def _clf(tiny_bodies, **kw):
    return TransmodalClassifier(body=tiny_bodies["bert"], epochs=3, batch_size=8, max_tokens=16, **kw)


def test_params_and_clone(tiny_bodies):
    est = _clf(tiny_bodies, lr=3e-4)
    params = est.get_params()
    assert params["lr"] == 3e-4 and params["epochs"] == 3
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    est.set_params(epochs=5)
    assert est.epochs == 5


def test_classifier_contract(tiny_bodies, toy_series):
    x, y = toy_series
    labels = np.where(y == 0, "a", "b")
    est = _clf(tiny_bodies).fit(x, labels)
    assert list(est.classes_) == ["a", "b"]
    proba = est.predict_proba(x)
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(est.predict(x), est.classes_[proba.argmax(1)])
    assert 0.0 <= est.score(x, labels) <= 1.0


def test_unfitted_raises(tiny_bodies, toy_series):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        _clf(tiny_bodies).predict(toy_series[0])


def test_pipeline_and_grid_search(tiny_bodies, toy_series):
    x, y = toy_series
    pipe = Pipeline([("scale", FunctionTransformer(lambda a: a * 2.0)), ("clf", _clf(tiny_bodies))])
    search = GridSearchCV(pipe, {"clf__head_lr": [1e-3, 3e-3]}, cv=2)
    search.fit(x, y)
    assert search.best_params_["clf__head_lr"] in (1e-3, 3e-3)
    assert search.predict(x).shape == (40,)


def test_regressor(tiny_bodies):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 32)).astype(np.float32)
    y = x.mean(1) * 5
    est = TransmodalRegressor(body=tiny_bodies["bert"], epochs=3, batch_size=8, max_tokens=16).fit(x, y)
    assert est.predict(x).shape == (24,)
    assert np.isfinite(est.score(x, y))


# ----------------------------------------------------------------- scikit-learn conformance
# parametrize_with_checks needs estimator instances when the module is collected, before any
# fixture ran: they point at a body path chosen now, which the module fixture below fills
# (a link to the session's tiny BERT) before the first check fits.
import os  # noqa: E402
import pickle  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from transmodal.run.estimators import expected_failed_checks  # noqa: E402

_BODY = Path(tempfile.gettempdir()) / f"transmodal-check-body-{os.getpid()}"
TINY = dict(body=str(_BODY), epochs=2, max_tokens=16)


@pytest.fixture(scope="module", autouse=True)
def _check_body(tiny_bodies):
    if _BODY.is_symlink():
        _BODY.unlink()
    _BODY.symlink_to(tiny_bodies["bert"], target_is_directory=True)
    yield
    _BODY.unlink()


@parametrize_with_checks([TransmodalClassifier(**TINY), TransmodalRegressor(**TINY)],
                         expected_failed_checks=expected_failed_checks)
def test_scikit_learn_check(estimator, check):
    check(estimator)


def test_declared_exceptions_each_have_a_reason():
    from sklearn.utils import get_tags

    for est in (TransmodalClassifier(**TINY), TransmodalRegressor(**TINY)):
        failures = expected_failed_checks(est)
        assert failures and all(len(reason) > 40 for reason in failures.values())
        assert get_tags(est).input_tags.three_d_array and not get_tags(est).input_tags.sparse
    assert get_tags(TransmodalRegressor()).target_tags.multi_output
    assert get_tags(TransmodalClassifier()).classifier_tags.poor_score  # POOR_SCORE_REASON
    assert get_tags(TransmodalRegressor()).regressor_tags.poor_score


def _noisy(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 24)).astype(np.float32)
    y = np.array([0, 1] * (n // 2))
    return x, y


def test_class_weight_reaches_the_loss():
    """Pure-noise inputs: unweighted, both classes are predicted; a class weight of 1000:0.0001
    makes the loss (and the validation score) care about class 0 only."""
    x, y = _noisy()
    plain = TransmodalClassifier(**TINY).fit(x, y).predict(x)
    heavy = TransmodalClassifier(**TINY, class_weight={0: 1000, 1: 1e-4}).fit(x, y).predict(x)
    assert (heavy == 0).mean() > 0.9 > (plain == 0).mean()
    balanced = TransmodalClassifier(**TINY, class_weight="balanced").fit(x, y)  # equal counts:
    np.testing.assert_array_equal(balanced.predict(x), plain)  # equal weights change nothing


def test_sample_weight_reaches_the_loss_and_equal_weights_change_nothing():
    x, y = _noisy()
    base = TransmodalClassifier(**TINY).fit(x, y)
    same = TransmodalClassifier(**TINY).fit(x, y, sample_weight=np.full(len(y), 3.0))
    np.testing.assert_array_equal(same.predict_proba(x), base.predict_proba(x))
    w = np.where(y == 1, 50.0, 0.02)
    weighted = TransmodalClassifier(**TINY).fit(x, y, sample_weight=w)
    assert weighted.predict_proba(x)[:, 1].mean() > base.predict_proba(x)[:, 1].mean() + 0.1
    assert weighted.run_.summary["sample_weight"].startswith("given")


def test_weighted_loss_is_the_weighted_mean_of_per_sample_losses():
    import torch

    from transmodal.tasks import get_task

    out, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    task = get_task("classification")
    per = torch.nn.functional.cross_entropy(out, target, reduction="none")
    w = torch.tensor([0.5, 1.5])
    assert torch.isclose(task.loss(out, target, w), (per * w).mean())
    assert torch.isclose(task.loss(out, target, torch.ones(2)), task.loss(out, target))
    scores = task.score(np.array([0, 1]), np.array([0, 0]), sample_weight=np.array([3.0, 1.0]))
    assert scores["accuracy"] == 0.75


def test_bad_sample_weights_are_refused_with_the_fix():
    x, y = _noisy(20)
    with pytest.raises(ValueError, match="zero"):
        TransmodalClassifier(**TINY).fit(x, y, sample_weight=np.zeros(20))
    with pytest.raises(ValueError, match="class 0"):
        TransmodalClassifier(**TINY).fit(x, y, sample_weight=(y == 1).astype(float))
    with pytest.raises(ValueError, match="Negative values"):
        TransmodalRegressor(**TINY).fit(x, y * 1.0, sample_weight=-np.ones(20))


def test_pickle_is_small_and_predicts_identically(tmp_path):
    import joblib
    import torch

    x, y = _noisy()
    est = TransmodalClassifier(**TINY).fit(x, y)
    proba = est.predict_proba(x)  # the accelerator exists now: it must not travel
    blob = pickle.dumps(est)
    weights = sum(t.numel() * t.element_size() for t in est.run_.model.state_dict().values())
    assert len(blob) < weights * 1.05 + 200_000  # the weights and little else
    assert b"accelerate." not in blob  # no object of accelerate's modules
    twin = pickle.loads(blob)
    np.testing.assert_array_equal(twin.predict_proba(x), proba)
    joblib.dump(est, tmp_path / "est.joblib")
    assert (tmp_path / "est.joblib").stat().st_size < weights * 1.05 + 200_000
    np.testing.assert_array_equal(joblib.load(tmp_path / "est.joblib").predict(x), est.predict(x))
    assert isinstance(twin.run_.model, torch.nn.Module) and est.run_._accelerator is not None


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_fitted_estimator_pickles_cpu_tensors():
    """Fitted on a GPU, pickled for a machine without one: the blob holds CPU tensors only,
    the live estimator still predicts the same, and so does its twin (back on the GPU)."""
    x, y = _noisy()
    est = TransmodalClassifier(**TINY, device="cuda").fit(x, y)
    proba = est.predict_proba(x)
    blob = pickle.dumps(est)
    twin = pickle.loads(blob)
    assert all(p.device.type == "cpu" for m in twin.run_.members for p in m.parameters())
    np.testing.assert_allclose(twin.predict_proba(x), proba, atol=1e-6)
    np.testing.assert_allclose(est.predict_proba(x), proba, atol=1e-6)
