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


def test_info_lists_offline_body_and_datasets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "GunPoint" in out
