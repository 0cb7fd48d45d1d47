"""Tables (CSV, DataFrames): feature columns are matched by name, never by position; an id
column is no feature and is carried into the predictions file (issue 15, item 1)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import transmodal
from transmodal.cli import main
from transmodal.data import Preprocessor, load_dataset
from transmodal.errors import DataError

FEATURES = [f"f{i}" for i in range(6)]
FIT = ["--epochs", "2", "--batch-size", "8", "--max-tokens", "8", "--quiet"]


def _table(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b"] * (n // 2))
    x = rng.normal(size=(n, len(FEATURES)))
    x[y == "b", :3] += 1.5
    x[:, 5] *= 100  # columns on different scales: a swap changes the predictions
    frame = pd.DataFrame(x, columns=FEATURES)
    frame.insert(0, "sample", [f"s{i}" for i in range(n)])
    frame["label"] = y
    return frame


@pytest.fixture(scope="module")
def tables(tiny_bodies, tmp_path_factory):
    """A run fitted on train.csv (id column `sample`) and test tables in several layouts."""
    root = tmp_path_factory.mktemp("tables")
    frame = _table()
    frame[:30].to_csv(root / "train.csv", index=False)
    test = frame[30:]
    test.to_csv(root / "test.csv", index=False)
    test[["label", *FEATURES[::-1], "sample"]].to_csv(root / "reordered.csv", index=False)
    test.assign(extra=1.0).to_csv(root / "extra.csv", index=False)
    test.drop(columns=["f0", "f4"]).to_csv(root / "missing.csv", index=False)
    assert main(["fit", "--data", str(root / "train.csv"), "--id-column", "sample",
                 "--body", tiny_bodies["bert"], "--out", str(root / "run"), *FIT]) == 0
    return root


def test_feature_names_are_stored_and_the_id_column_is_no_feature(tables):
    meta = json.loads((tables / "run" / "model" / "model.json").read_text())
    assert meta["preprocessor"]["feature_names"] == FEATURES
    assert meta["preprocessor"]["input_shape"] == [1, len(FEATURES)]


def test_csv_with_reordered_columns_gives_the_same_predictions_with_ids(tables):
    for name in ("test", "reordered"):
        assert main(["predict", str(tables / "run"), "--data", str(tables / f"{name}.csv"),
                     "--out", str(tables / f"pred_{name}.csv")]) == 0
    same = pd.read_csv(tables / "pred_test.csv")
    assert list(same.columns) == ["sample", "prediction"]  # the run's id column comes along
    assert list(same["sample"]) == [f"s{i}" for i in range(30, 40)]
    pd.testing.assert_frame_equal(pd.read_csv(tables / "pred_reordered.csv"), same)


def test_run_predict_matches_a_dataframe_by_column_name(tables):
    run = transmodal.load(tables / "run")
    test = pd.read_csv(tables / "test.csv")
    in_order = test[FEATURES].to_numpy(np.float32)
    expected = run.predict(in_order)
    np.testing.assert_array_equal(run.predict(test[FEATURES[::-1]]), expected)
    np.testing.assert_array_equal(run.predict(test), expected)  # label and id columns left out
    # the positional array of swapped columns is what used to happen silently to a CSV
    assert not np.array_equal(run.predict_proba(in_order[:, ::-1]), run.predict_proba(in_order))


@pytest.mark.parametrize("name, message", [
    ("extra", r"extra\.csv: the columns differ from the 6 feature columns the model was fitted "
              r"on: unexpected 'extra' \(not a feature of the model; an id or label column\?"),
    ("missing", r"missing\.csv: the columns differ .*: missing 'f0', 'f4'\. Give the training "
                r"columns \(in any order\)"),
])
def test_missing_or_unexpected_columns_are_named(tables, name, message, capsys):
    for argv in (["predict", str(tables / "run"), "--data", str(tables / f"{name}.csv"),
                  "--out", str(tables / "p.csv")],
                 ["evaluate", str(tables / "run"), "--data", str(tables / f"{name}.csv")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert "grid" not in err
        import re

        assert re.search(message, err), err
    with pytest.raises(DataError, match="unexpected 'extra'|missing 'f0', 'f4'"):
        transmodal.load(tables / "run").predict(pd.read_csv(tables / f"{name}.csv"))


def test_evaluate_reordered_csv_scores_like_the_original(tables, capsys):
    scores = []
    for name in ("test", "reordered"):
        assert main(["evaluate", str(tables / "run"), "--data", str(tables / f"{name}.csv")]) == 0
        captured = capsys.readouterr()
        scores.append(json.loads(captured.out))
        assert "no test split, so all 10 rows were scored" in captured.err
    assert scores[0] == scores[1]


def test_test_data_csv_is_matched_by_name(tables):
    ds = load_dataset(str(tables / "train.csv"), str(tables / "reordered.csv"), id_column="sample")
    same = load_dataset(str(tables / "train.csv"), str(tables / "test.csv"), id_column="sample")
    assert ds.feature_names == FEATURES and ds.x_train.shape == (30, 1, 6)
    np.testing.assert_array_equal(ds.x_test, same.x_test)
    with pytest.raises(DataError, match="test data: the columns differ .*missing 'f0', 'f4'"):
        load_dataset(str(tables / "train.csv"), str(tables / "missing.csv"), id_column="sample")


def test_id_column_errors(tables, tmp_path):
    with pytest.raises(DataError, match="no id column 'nope'; columns are sample, f0"):
        load_dataset(str(tables / "train.csv"), id_column="nope")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8)), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="--id-column sample applies to CSV data only"):
        load_dataset(str(tmp_path / "d.npz"), id_column="sample")


def test_preprocessing_record_without_feature_names_still_loads():
    legacy = Path(__file__).parent / "reference" / "legacy" / "finished"
    record = json.loads((legacy / "model" / "model.json").read_text())["preprocessor"]
    assert "feature_names" not in record  # written before the field existed
    assert Preprocessor.from_dict(record).feature_names is None
    assert transmodal.load(legacy).preprocessor.feature_names is None
