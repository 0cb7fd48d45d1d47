import numpy as np
import pytest

from transmodal.data import Preprocessor, as_inputs, load_dataset, resample_to, split_train_val
from transmodal.errors import DataError
from transmodal.tasks import get_task, infer_task


def test_npz_with_test_split(tmp_path):
    x = np.random.rand(10, 2, 16)
    y = np.array([0, 1] * 5)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.x_train.shape == (10, 2, 16) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (4, 2, 16)


def test_npz_x_y_and_2d_input(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.rand(6, 20), y=np.array([1.0, 2, 3, 4, 5, 6]))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.x_train.shape == (6, 1, 20) and ds.x_test is None
    assert infer_task(ds.x_train, ds.y_train) == "regression"


def test_csv_label_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,label\n1,2,3,x\n4,5,6,y\n7,8,9,x\n")
    ds = load_dataset(str(path))
    assert ds.x_train.shape == (3, 1, 3)
    assert list(ds.y_train) == ["x", "y", "x"]
    with pytest.raises(DataError, match="no label column 'target'"):
        load_dataset(str(path), label_column="target")


def test_csv_string_in_numeric_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,x\n4,oops,y\n")
    with pytest.raises(DataError, match="column 'b' holds non-numeric values.*'oops'"):
        load_dataset(str(path))


def test_ucr_bundled_and_unknown():
    ds = load_dataset("ucr:GunPoint")
    assert ds.x_train.shape == (50, 1, 150) and ds.x_test.shape == (150, 1, 150)
    with pytest.raises(DataError, match="unknown or unavailable dataset 'ucr:NoSuchSet'"):
        load_dataset("ucr:NoSuchSet")


def test_variable_length_resampled_to_longest():
    series = [np.arange(10.0), np.arange(20.0), np.arange(15.0)]
    x, lengths = as_inputs(series, target_length=None)
    assert x.shape == (3, 1, 20) and lengths == [10, 20, 15]
    # the endpoints survive linear resampling
    assert x[0, 0, 0] == 0.0 and x[0, 0, -1] == pytest.approx(9.0)
    np.testing.assert_allclose(resample_to(np.arange(20.0)[None], 20), np.arange(20.0)[None])


@pytest.mark.parametrize("x, y, message", [
    (np.full((4, 10), np.nan), [0, 1, 0, 1], "NaN or inf"),
    (np.zeros((4, 10)), [0, 1, 0], "x has 4 samples but y has 3"),
    (np.zeros((0, 10)), [], "zero samples"),
    (np.zeros((4, 2, 3, 4, 5)), [0, 1, 0, 1], "expected \\(N, L\\)"),
    (np.zeros((4, 10)), [0.0, np.inf, 1.0, 2.0], "y contains NaN"),
])
def test_bad_arrays(x, y, message):
    with pytest.raises(DataError, match=message):
        load_dataset((x, np.asarray(y)))


def test_single_sample_class_rejected():
    x = np.zeros((5, 1, 8))
    with pytest.raises(DataError, match="class 2 has a single sample"):
        get_task("classification").check_targets(x, np.array([0, 0, 1, 1, 2]))


def test_task_inference():
    x = np.zeros((4, 1, 8))
    assert infer_task(x, np.array(["a", "b", "a", "b"])) == "classification"
    assert infer_task(x, np.array([1, 2, 1, 2])) == "classification"
    assert infer_task(x, np.zeros((4, 3))) == "regression"
    assert infer_task(x, np.zeros((4, 8))) == "dense"
    assert infer_task(np.zeros((4, 2, 5, 6)), np.zeros((4, 1, 5, 6))) == "dense"


def test_split_is_stratified_and_disjoint():
    y = np.array([0] * 20 + [1] * 10)
    tr, va = split_train_val(y, get_task("classification"), 0.2, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 30
    assert sorted(np.bincount(y[va])) == [2, 4]


def test_preprocessor_roundtrip_and_checks():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(20, 2, 12)).astype(np.float32)
    y = rng.normal(100, 10, size=(20, 2))
    p = Preprocessor.fit(x, y, get_task("regression"))
    xt = p.transform_x(x)
    np.testing.assert_allclose(xt.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(p.inverse_y(p.transform_y(y)), y, rtol=1e-6)
    restored = Preprocessor.from_dict(p.to_dict())
    np.testing.assert_array_equal(restored.transform_x(x), xt)
    with pytest.raises(DataError, match="3 channels; the model was trained on 2"):
        p.transform_x(np.zeros((2, 3, 12), np.float32))
    with pytest.raises(DataError, match="input grid \\(13,\\) differs"):
        p.transform_x(np.zeros((2, 2, 13), np.float32))


def test_unseen_label_rejected():
    p = Preprocessor.fit(np.zeros((4, 1, 5)), np.array(["a", "b", "a", "b"]), get_task("classification"))
    with pytest.raises(DataError, match="labels \\['c'\\] were not seen"):
        p.transform_y(np.array(["a", "c"]))


def test_dense_all_zero_target_rejected():
    x = np.ones((4, 1, 8))
    y = np.ones((4, 8))
    y[2] = 0.0
    with pytest.raises(DataError, match="dense target of sample 2 is identically zero"):
        get_task("dense").check_targets(x, y)
