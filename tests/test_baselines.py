"""Non-deep baselines: MiniRocket on GunPoint, linear and 1-NN sanity, short series, dense skip."""

import math

import numpy as np
import pytest

from transmodal.bench.baselines import (
    MiniRocketBaseline,
    fit_predict,
    run_baselines,
)
from transmodal.errors import ConfigError, DataError
from transmodal.tasks import score as score_task
from transmodal.data.pde import make_burgers


def _two_class_series(n, length, rng):
    """Class 1 carries a bump in the middle; class 0 is noise. (n, 1, length), labels 'a'/'b'."""
    y = np.array(["a", "b"] * (n // 2))
    x = rng.normal(size=(n, 1, length))
    x[y == "b", 0, length // 3 : 2 * length // 3] += 2.0
    return x, y


def test_minirocket_on_gunpoint():
    from aeon.datasets import load_classification

    x_train, y_train = load_classification("GunPoint", split="train")
    x_test, y_test = load_classification("GunPoint", split="test")
    pred = fit_predict("minirocket", x_train, y_train, x_test, "classification", seed=0)
    assert score_task("classification", y_test, pred)["accuracy"] >= 0.9  # published: 0.993


def test_minirocket_keeps_numba_off_the_openmp_runtime_torch_uses():
    """On numba's "omp" layer, a later torch.set_num_threads slowed training ~15x."""
    import os

    import numba

    x, y = _two_class_series(24, 40, np.random.default_rng(0))
    fit_predict("minirocket", x, y, x, "classification", seed=0)
    if "NUMBA_THREADING_LAYER" not in os.environ:
        assert numba.threading_layer() == "workqueue"


def test_linear_regression_beats_a_constant_predictor():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2, 20))
    w = rng.normal(size=(2, 20))
    y = np.einsum("ncl,cl->n", x, w) + 0.1 * rng.normal(size=200)
    rows = run_baselines(x[:150], y[:150], x[150:], y[150:], "regression", names=("linear",))
    constant_rmse = float(np.sqrt(np.mean((y[150:] - y[:150].mean()) ** 2)))
    assert rows[0]["rmse"] < 0.5 * constant_rmse and rows[0]["r2"] > 0.8


def test_baseline_scores_are_the_package_scores_and_agree_with_sklearn():
    """Baselines are scored by transmodal.tasks.score, as fits are; on non-constant targets its
    R² (mean over outputs of 1 - ss_res / ss_tot) and RMSE are sklearn's."""
    from sklearn.metrics import mean_squared_error, r2_score

    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 1, 16))
    y = np.stack([x[:, 0, :4].sum(1), x[:, 0, 4:].mean(1)], axis=1)  # (N, 2): two outputs
    y += 0.1 * rng.normal(size=y.shape)
    for name in ("linear", "1nn"):
        row = run_baselines(x[:80], y[:80], x[80:], y[80:], "regression", names=(name,))[0]
        pred = fit_predict(name, x[:80], y[:80], x[80:], "regression")
        assert {k: row[k] for k in ("rmse", "r2")} == score_task("regression", y[80:], pred)
        assert row["r2"] == pytest.approx(r2_score(y[80:], pred), rel=1e-9, abs=1e-12)
        assert row["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y[80:], pred)), rel=1e-9)


def test_run_baselines_classification_report():
    rng = np.random.default_rng(1)
    x, y = _two_class_series(60, 30, rng)
    rows = run_baselines(x[:40], y[:40], x[40:], y[40:], "classification")
    assert [r["name"] for r in rows] == ["minirocket", "linear", "1nn"]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
        assert r["train_time_s"] >= 0 and r["predict_time_s"] >= 0
    assert rows[0]["accuracy"] >= 0.9  # the bump is easy for MiniRocket


def test_dense_pde_task_linear_and_1nn_are_finite_and_below_one():
    task = make_burgers(n_train=64, n_test=32)
    rows = run_baselines(task.x_train, task.y_train, task.x_test, task.y_test, "dense")
    by_name = {r["name"]: r for r in rows}
    assert "skipped" in by_name["minirocket"] and "rel_l2" not in by_name["minirocket"]
    for name in ("linear", "1nn"):
        assert math.isfinite(by_name[name]["rel_l2"]) and by_name[name]["rel_l2"] < 1.0


def test_dense_skip_path():
    task = make_burgers(n_train=8, n_test=4)
    assert fit_predict("minirocket", task.x_train, task.y_train, task.x_test, "dense") is None
    assert MiniRocketBaseline.skip_reason("dense")
    with pytest.raises(ConfigError):
        MiniRocketBaseline().fit(task.x_train, task.y_train, "dense")
    pred = fit_predict("1nn", task.x_train, task.y_train, task.x_test, "dense")
    assert pred.shape == task.y_test.shape
    # 1-NN copies a training target verbatim
    assert any(np.array_equal(pred[0], t) for t in task.y_train)


def test_short_series_are_padded_or_refused():
    rng = np.random.default_rng(2)
    x, y = _two_class_series(40, 5, rng)  # length 5 < 9
    pred = fit_predict("minirocket", x[:30], y[:30], x[30:], "classification")
    assert pred.shape == (10,)
    with pytest.raises(DataError, match="length >= 9"):
        MiniRocketBaseline(pad_short=False).fit(x, y, "classification")


def test_grids_are_flattened_for_linear_and_1nn():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 1, 4, 4))  # (N, C, H, W)
    y = x.sum(axis=(1, 2, 3))
    for name in ("linear", "1nn"):
        assert fit_predict(name, x[:20], y[:20], x[20:], "regression").shape == (10,)


def test_user_errors_are_clear():
    x = np.zeros((4, 1, 10))
    with pytest.raises(ConfigError):
        fit_predict("linear", x, np.arange(4.0), x, "segmentation")
    with pytest.raises(ConfigError):
        fit_predict("svm", x, np.arange(4.0), x, "regression")
    with pytest.raises(DataError):
        fit_predict("linear", x, np.arange(3.0), x, "regression")
    with pytest.raises(DataError):
        fit_predict("linear", x[:, 0], np.arange(4.0), x[:, 0], "regression")
    with pytest.raises(DataError):
        fit_predict("linear", x, np.arange(4.0), np.zeros((4, 1, 11)), "regression")


def test_published_table_lookup_and_provenance():
    from transmodal.bench.published import (
        METHODS,
        PUBLISHED,
        PUBLISHED_DETAIL,
        published_accuracy,
    )

    assert published_accuracy("GunPoint", "MiniRocket") == pytest.approx(0.993333)
    assert published_accuracy("arrowhead", "hive-cote 2") == pytest.approx(0.8685714285714285)
    assert published_accuracy("BasicMotions", "ROCKET") is None  # not found: stored as None
    assert published_accuracy("NoSuchSet", "ROCKET") is None
    with pytest.raises(ConfigError):
        published_accuracy("GunPoint", "InceptionTime")
    for dataset, row in PUBLISHED.items():
        assert set(row) == set(METHODS)
        for method, value in row.items():
            assert value is None or 0.0 < value <= 1.0
            assert PUBLISHED_DETAIL[dataset][method]  # every entry says where it came from


def test_published_hc2_values_match_the_file_aeon_ships():
    import importlib.resources

    import pandas as pd

    from transmodal.bench.published import PUBLISHED

    path = importlib.resources.files("aeon").joinpath(
        "testing/example_results_files/classification/accuracy/HC2_accuracy.csv"
    )
    if not path.is_file():
        pytest.skip("this aeon version does not ship HC2_accuracy.csv")
    table = pd.read_csv(str(path), index_col=0)
    table = table[~table.index.duplicated()]
    for dataset, row in PUBLISHED.items():
        if row["HC2"] is not None:
            assert table.loc[dataset].iloc[0] == row["HC2"]  # resample 0 = default split
