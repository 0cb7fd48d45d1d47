import json

import numpy as np
import pytest

from transmodal.cli import main


@pytest.fixture
def npz(toy_npz):
    return toy_npz


def _fit(tiny_bodies, npz, out, *extra):
    return main(["fit", "--data", str(npz), "--body", tiny_bodies["bert"], "--epochs", "3",
                 "--batch-size", "8", "--max-tokens", "16", "--out", str(out), "--quiet", *extra])


def test_fit_evaluate_predict(tiny_bodies, npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit(tiny_bodies, npz, run) == 0
    out = capsys.readouterr().out
    assert "test:" in out and str(run) in out
    assert main(["evaluate", str(run), "--data", str(npz)]) == 0
    scores = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "summary.json").read_text())
    assert scores["accuracy"] == summary["metrics"]["test"]["accuracy"]
    for suffix in (".npy", ".csv"):
        target = tmp_path / f"pred{suffix}"
        assert main(["predict", str(run), "--data", str(npz), "--out", str(target)]) == 0
        assert target.exists()
    assert np.load(tmp_path / "pred.npy").shape == (10,)
    assert main(["predict", str(run), "--data", str(npz), "--out", str(tmp_path / "p.csv"), "--proba"]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "p_0,p_1"


def test_yaml_config_and_command_line_override(tiny_bodies, npz, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {npz}\nbody: {tiny_bodies['bert']}\nepochs: 5\nbatch_size: 8\nmax_tokens: 16\nseed: 4\n")
    run = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    import yaml

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["epochs"] == 2 and resolved["seed"] == 4 and resolved["batch_size"] == 8


def test_yaml_numbers_without_a_dot_are_numbers(tiny_bodies, npz, tmp_path, capsys):
    """PyYAML reads ``lr: 3e-5`` as the string '3e-5'; the run must train with the number."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {npz}\nbody: {tiny_bodies['bert']}\nepochs: 1\nbatch_size: 8\n"
                   "max_tokens: 16\nlr: 3e-5\nhead_lr: 1e-3\n")
    run = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    import yaml

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["lr"] == 3e-5 and isinstance(resolved["lr"], float) and resolved["head_lr"] == 1e-3
    cfg.write_text(f"data: {npz}\nbody: {tiny_bodies['bert']}\nepochs: 1.5\n")
    assert main(["fit", "--config", str(cfg), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --epochs must be a whole number, got 1.5"
    assert not (tmp_path / "bad" / "summary.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["fit", "--data", "ucr:NoSuchSet"], "unknown or unavailable dataset 'ucr:NoSuchSet'"),
    (["fit", "--data", "missing.npz"], "data file 'missing.npz' does not exist"),
    (["fit", "--data", "ucr:GunPoint", "--body", "nope/nope"], "unknown body 'nope/nope'"),
    (["fit", "--data", "ucr:GunPoint", "--tune", "half"], "unknown --tune 'half'"),
    (["fit", "--data", "ucr:GunPoint", "--align", "magic"], "unknown --align 'magic'"),
    (["fit"], "no data"),
])
def test_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "r")] if argv[0] == "fit" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "r" / "summary.json").exists()


def test_predict_with_wrong_channels(tiny_bodies, npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit(tiny_bodies, npz, run) == 0
    np.save(tmp_path / "bad.npy", np.zeros((3, 2, 48), np.float32))
    assert main(["predict", str(run), "--data", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o.npy")]) == 2
    assert "2 channels; the model was trained on 1" in capsys.readouterr().err


def test_predict_and_evaluate_take_a_device(tiny_bodies, npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit(tiny_bodies, npz, run) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(npz), "--out", str(tmp_path / "a.npy")]) == 0
    assert main(["predict", str(run), "--data", str(npz), "--out", str(tmp_path / "b.npy"),
                 "--device", "cpu"]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert main(["evaluate", str(run), "--data", str(npz), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(npz), "--out", str(tmp_path / "c.npy"),
                 "--device", "tpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown --device 'tpu'" in err[0]
    assert not (tmp_path / "c.npy").exists()  # nothing written


def test_info_lists_offline_body_and_datasets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "GunPoint" in out


def test_bare_bench_prints_its_help_and_starts_nothing(monkeypatch, capsys):
    import importlib

    def no_benchmark(name, package=None):  # the suite (90 min) must not start
        raise AssertionError(f"bench imported {name}")

    monkeypatch.setattr(importlib, "import_module", no_benchmark)
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: transmodal bench")
    for name in ("suite", "align", "tune", "ablate", "precision", "speed"):
        assert f"\n  {name} " in out, name


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_bench_help_flags(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", flag])
    assert exit_.value.code == 0
    assert "usage: transmodal bench" in capsys.readouterr().out


def test_version(capsys):
    import transmodal

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"transmodal {transmodal.__version__}\n"


def test_abbreviated_options_are_refused(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:  # --epoch used to mean --epochs
        main(["fit", "--data", "ucr:GunPoint", "--epoch", "3", "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: unrecognized arguments: --epoch 3 (`transmodal COMMAND "
                                "--help` lists the options)"]
    assert not (tmp_path / "r").exists()


def test_negative_numbers_reach_the_option_check(capsys, tmp_path):
    for value in ("-1e-4", "-0.001", "-3"):
        assert main(["fit", "--data", "ucr:GunPoint", "--lr", value, "--out", str(tmp_path / "r")]) == 2
        assert capsys.readouterr().err == "error: --lr must be positive\n"
    assert main(["fit", "--data", "ucr:GunPoint", "--epochs", "-2", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "error: --epochs must be at least 1\n"
