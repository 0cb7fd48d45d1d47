"""What ``fit`` tells the user (issue 15, items 3-5): the baselines beside the model's score,
notes instead of silent surprises, in-memory test arrays, and no half-made run folder."""

import json

import numpy as np
import pytest
import yaml

import transmodal
from transmodal.bench.baselines import run_baselines
from transmodal.cli import main
from transmodal.errors import ConfigError
from transmodal.run import baselines as fit_baselines

API = dict(epochs=2, batch_size=8, max_tokens=8, progress=False)


def _split(x, y):
    x = x[:, None]  # (N, 1, L), as fit reads (N, L)
    return (x[:30], y[:30]), (x[30:], y[30:])


def test_baselines_are_scored_on_the_test_split_beside_the_model(tiny_bodies, toy_series, tmp_path,
                                                                 capsys):
    x, y = toy_series
    train, test = _split(x, y)
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    assert main(["fit", "--data", str(path), "--body", tiny_bodies["bert"], "--epochs", "2",
                 "--batch-size", "8", "--max-tokens", "8", "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["baselines"]) == ["linear", "1nn"]  # --baselines fast (the default)
    # fitted on the training split only, scored on the test split: the bench's own numbers
    expected = {r["name"]: r for r in run_baselines(*train, *test, "classification",
                                                    names=("linear", "1nn"))}
    for name, row in summary["baselines"].items():
        assert row["accuracy"] == expected[name]["accuracy"]
        assert row["macro_f1"] == expected[name]["macro_f1"]
    lines = out.splitlines()
    test_line = next(i for i, line in enumerate(lines) if line.startswith("test:"))
    assert lines[test_line + 1] == (
        f"baselines:  linear (logistic/ridge) accuracy {summary['baselines']['linear']['accuracy']:.4f}"
        f"   1-NN accuracy {summary['baselines']['1nn']['accuracy']:.4f}")
    assert "the best baseline" in lines[test_line + 2]


def test_baselines_change_nothing_of_the_model(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    train, test = _split(x, y)
    runs = {which: transmodal.fit(train, test_data=test, out=tmp_path / which, baselines=which,
                                  body=tiny_bodies["bert"], **API) for which in ("none", "fast")}
    assert runs["none"].summary["baselines"] == {}
    assert runs["none"].summary["metrics"] == runs["fast"].summary["metrics"]
    assert ((tmp_path / "none" / "model" / "model.safetensors").read_bytes()
            == (tmp_path / "fast" / "model" / "model.safetensors").read_bytes())
    # in-memory test arrays: config.yaml records "arrays" (it used to fail with a YAML error)
    assert yaml.safe_load((tmp_path / "fast" / "config.yaml").read_text())["test_data"] == "arrays"
    assert runs["fast"].summary["n_test"] == 10


def test_minirocket_is_skipped_with_the_reason_where_it_does_not_apply(monkeypatch):
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 10)
    images = rng.normal(size=(20, 1, 6, 6))
    got = fit_baselines.score_baselines("all", images[:14], y[:14], images[14:], y[14:],
                                        "classification", 0)
    assert list(got) == ["linear", "1nn", "minirocket"]
    assert "accuracy" in got["linear"] and "accuracy" in got["1nn"]
    assert got["minirocket"] == {"skipped": "MiniRocket is a method for series (N, C, L); these "
                                            "inputs are images"}
    monkeypatch.setattr(fit_baselines, "MINIROCKET_MAX_VALUES", 100)
    series = rng.normal(size=(20, 1, 16))
    got = fit_baselines.score_baselines("all", series[:14], y[:14], series[14:], y[14:],
                                        "classification", 0)
    assert got["minirocket"]["skipped"].startswith("320 input values (train + test) would take")
    assert fit_baselines.score_baselines("fast", series[:14], y[:14], series[14:], y[14:],
                                         "median-regression", 0) == {
        "linear": {"skipped": "no baseline for task 'median-regression'"},
        "1nn": {"skipped": "no baseline for task 'median-regression'"}}


def test_minirocket_runs_with_baselines_all(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    train, test = _split(x, y)
    run = transmodal.fit(train, test_data=test, baselines="all", body=tiny_bodies["bert"], **API)
    row = run.summary["baselines"]["minirocket"]
    assert 0.0 <= row["accuracy"] <= 1.0 and row["train_time_s"] > 0


def test_no_test_split_no_baselines_and_a_note(tiny_bodies, toy_series):
    x, y = toy_series
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], **API)
    assert run.summary["baselines"] == {} and "test" not in run.summary["metrics"]
    assert any("no test split, so no baselines were scored" in n for n in run.summary["notes"])


def test_max_tokens_above_the_body_limit_is_recorded_and_printed(tiny_bodies, toy_series, tmp_path,
                                                                 capsys):
    x, y = toy_series
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y)
    assert main(["fit", "--data", str(path), "--body", tiny_bodies["bert"], "--epochs", "1",
                 "--batch-size", "8", "--max-tokens", "1000", "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["max_tokens"] == 64  # the tiny BERT's position limit
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["max_tokens"] == 1000
    note = "--max-tokens 1000 is above the body's limit of 64 tokens; using 64"
    assert note in summary["notes"]
    assert f"note: {note}" in capsys.readouterr().out.splitlines()


def test_float_class_codes_get_a_note_and_stay_regression(tiny_bodies, toy_series, capsys):
    x, y = toy_series
    run = transmodal.fit((x, (y + 1).astype(np.float64)), body=tiny_bodies["bert"],
                         **{**API, "progress": True, "epochs": 1})
    assert run.task == "regression"  # the inferred task is unchanged (results stay the same)
    note = ("the labels are floats with 2 whole values (1, 2), so --task auto chose regression; "
            "if they are class codes, pass --task classification")
    assert note in run.summary["notes"]
    assert f"note: {note}" in capsys.readouterr().err  # at once, before the training
    plain = transmodal.fit((x, x.mean(axis=1).astype(np.float64)), body=tiny_bodies["bert"],
                           **{**API, "epochs": 1})
    assert not any("class codes" in n for n in plain.summary["notes"])


def test_evaluate_without_test_split_says_every_row_was_scored(tiny_bodies, toy_series, tmp_path,
                                                               capsys):
    x, y = toy_series
    transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], **{**API, "epochs": 1})
    np.savez(tmp_path / "all.npz", x=x, y=y)
    np.savez(tmp_path / "split.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "all.npz")]) == 0
    captured = capsys.readouterr()
    assert "accuracy" in json.loads(captured.out)
    assert captured.err == (f"note: {tmp_path / 'all.npz'} has no test split, so all 40 rows were "
                            "scored (training rows too, if the run was fitted on these data)\n")
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "split.npz")]) == 0
    assert capsys.readouterr().err == ""


def test_a_config_that_cannot_be_written_leaves_no_run_folder(tiny_bodies, toy_series, tmp_path,
                                                              monkeypatch):
    from transmodal.run.folder import RunFolder

    def unwritable(self, config):
        raise yaml.representer.RepresenterError("cannot represent an object", object())

    monkeypatch.setattr(RunFolder, "write_config", unwritable)
    x, y = toy_series
    with pytest.raises(ConfigError, match="the options cannot be recorded in config.yaml"):
        transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], **API)
    assert not (tmp_path / "run").exists()


def test_numpy_scalar_options_are_recorded_as_numbers(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"],
                         **{**API, "epochs": np.int64(1), "lr": np.float64(3e-4)})
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["epochs"] == 1 and config["lr"] == 3e-4 and run.summary["epochs_run"] == 1


def test_resume_of_a_run_with_test_arrays(tiny_bodies, toy_series, tmp_path):
    from unittest import mock

    x, y = toy_series
    train, test = _split(x, y)
    opts = dict(body=tiny_bodies["bert"], **API)
    with mock.patch("shutil.rmtree"):  # keep the checkpoint that a finished run drops
        done = transmodal.fit(train, test_data=test, out=tmp_path / "run", **opts)
    (tmp_path / "run" / "summary.json").unlink()  # as if killed after the last checkpoint
    with pytest.raises(ConfigError, match="fitted with in-memory test arrays; pass the same "
                                          "test_data again"):
        transmodal.fit(train, resume=tmp_path / "run", progress=False)
    again = transmodal.fit(train, resume=tmp_path / "run", test_data=test, progress=False)
    assert again.summary["metrics"] == done.summary["metrics"]
