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
