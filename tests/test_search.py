"""transmodal search: Optuna trials of fit options on shared storage (journal, SQLite, PostgreSQL)."""

import csv
import math
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from glob import glob
from pathlib import Path

import numpy as np
import pytest
import yaml

optuna = pytest.importorskip("optuna")

from transmodal.cli import main  # noqa: E402
from transmodal.search import search  # noqa: E402

# a small space without alignment (no source reference to build): quick trials
SPACE = {"lr": {"low": 1e-5, "high": 1e-3, "log": True}, "head_lr": {"low": 1e-3, "high": 1e-2, "log": True},
         "tune": ["full", "frozen"]}
FAST = dict(epochs=2, batch_size=8, max_tokens=16, progress=False)


@pytest.fixture
def npz(toy_npz):
    return toy_npz


@pytest.fixture
def regression_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 1, 32)).astype(np.float32)
    y = (x[:, 0].mean(1) * 10 + 50).astype(np.float32)
    path = tmp_path / "reg.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


def _journal_study(folder):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    return optuna.load_study(study_name="transmodal", storage=storage)


def _rows(folder):
    with open(folder / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # two spawned processes each import torch: ~40 s on the shared 2-core machine
def test_two_workers_share_one_journal(tiny_bodies, npz, tmp_path):
    out = tmp_path / "search"
    summary = search(str(npz), trials=3, out=out, space=SPACE, workers=2, pruner="none",
                     body=tiny_bodies["bert"], **FAST)
    study = _journal_study(out)
    trials = study.get_trials()
    # 3 in total over the two processes (2 + 1), each with its own trial number
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert summary["trials"] == {"complete": 3} and summary["workers"] == 2
    rows = _rows(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and all(r["accuracy"] for r in rows)
    assert {"lr", "head_lr", "tune"} <= set(rows[0])
    for name in ("best.yaml", "history.png", "search.json"):
        assert (out / name).stat().st_size > 0, name
    # the objective is validation only: the best trial's value is its best validation accuracy
    assert summary["best"]["value"] == study.best_value
    assert summary["objective"].startswith("best validation accuracy")


def test_pruned_trial_is_recorded_as_pruned(tiny_bodies, npz, tmp_path):
    out = tmp_path / "search"
    # accuracy is never above 2: the pruner stops the trial after its first refine epoch
    summary = search(str(npz), trials=1, out=out, space=SPACE, body=tiny_bodies["bert"],
                     pruner=optuna.pruners.ThresholdPruner(upper=2.0, lower=1.5), **FAST)
    assert summary["trials"] == {"pruned": 1}
    (row,) = _rows(out)
    assert row["state"] == "pruned" and row["pruned_at_epoch"] == "1" and row["best_epoch"] == ""
    (trial,) = _journal_study(out).get_trials()
    assert list(trial.intermediate_values) == [1]  # the primary metric of refine epoch 1 was reported
    assert 0.0 <= trial.intermediate_values[1] <= 1.0
    assert not (out / "best.yaml").exists() and "best" not in summary


def test_best_yaml_refits_to_the_recorded_validation_score(tiny_bodies, regression_npz, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", "--data", str(regression_npz), "--trials", "2", "--out", str(out),
                 "--pruner", "none", "--body", tiny_bodies["bert"], "--epochs", "3",
                 "--batch-size", "8", "--max-tokens", "16", "--quiet",
                 "--space", str(_space_file(tmp_path))]) == 0
    printed = capsys.readouterr().out
    assert "study transmodal: 2 complete" in printed and "best configuration:" in printed
    summary = yaml.safe_load((out / "search.json").read_text())
    assert summary["metric"] == "rmse" and summary["direction"] == "minimize"
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["data"] == str(regression_npz) and best["lr"] == summary["best"]["params"]["lr"]
    run_dir = tmp_path / "refit"
    assert main(["fit", "--config", str(out / "best.yaml"), "--out", str(run_dir), "--quiet"]) == 0
    refit = yaml.safe_load((run_dir / "summary.json").read_text())
    # one thread on CPU (conftest): the re-fit is bit-identical, so the score is exactly equal
    assert refit["metrics"]["val"]["rmse"] == summary["best"]["value"]


def _space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1e-5, high: 1e-3, log: true}\ntune: [full, layernorm]\n")
    return path


# ------------------------------------------------------------------ bad input: one line, exit 2


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--pruner", "sometimes"], "unknown pruner 'sometimes'"),
    (["--storage", "postgresql://u@127.0.0.1:1/db"], "cannot be opened"),
    (["--storage", "postgresql://u@host:notaport/db"], "cannot be parsed"),
    (["--storage", "redis://localhost"], "unknown scheme 'redis'"),
    (["--storage", "sqlite:////nonexistent-dir/x/y.db"], "cannot be opened"),
    (["--space", "SPACE:lrr: [1]"], "unknown option 'lrr'"),
    (["--space", "SPACE:lr: {low: 1e-3, high: 1e-5}"], "lr has an empty range"),
    (["--space", "SPACE:tune: []"], "tune has an empty list of choices"),
    (["--space", "SPACE:tune: [full, nonsense]"], "tune='nonsense' is not a valid value"),
    (["--space", "SPACE:data: [a.npz]"], "unknown option 'data'"),
    (["--space", "SPACE:lr: {low: 0, high: 1, log: true}"], "low must be positive"),
])
def test_bad_input_is_one_line(extra, message, npz, tiny_bodies, tmp_path, capsys):
    if extra[0] == "--space":
        path = tmp_path / "space.yaml"
        path.write_text(extra[1].split(":", 1)[1] + "\n")
        extra = ["--space", str(path)]
    rc = main(["search", "--data", str(npz), "--trials", "1", "--out", str(tmp_path / "s"),
               "--body", tiny_bodies["bert"], *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "s").exists()  # nothing written


def test_every_option_fixed_leaves_nothing_to_search(npz, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: [1.0e-4]\n")
    assert main(["search", "--data", str(npz), "--trials", "1", "--space", str(space),
                 "--lr", "3e-4", "--out", str(tmp_path / "s")]) == 2
    assert "nothing to search" in capsys.readouterr().err


def test_default_space_is_valid_and_align_epochs_decides_alignment():
    from transmodal.config import FitConfig
    from transmodal.search.space import DEFAULT_SPACE, load_space, trial_options

    space = load_space(None)
    assert set(space) == set(DEFAULT_SPACE) == {"lr", "head_lr", "align_epochs", "tune", "max_tokens"}
    assert FitConfig.from_dict(trial_options({}, {"align_epochs": 10})).align == "otdd"
    assert FitConfig.from_dict(trial_options({"align": "mmd"}, {"align_epochs": 5})).align == "mmd"
    assert FitConfig.from_dict(trial_options({"align": "mmd"}, {"align_epochs": 0})).align == "none"
    assert "tune" not in load_space(None, {"tune": "full"})  # a fixed option is not searched


def test_default_space_centres_the_learning_rates_on_the_tasks_defaults():
    from transmodal.search.space import DEFAULT_SPACE, load_space
    from transmodal.tasks import get_task

    for name in ("classification", "dense"):
        body, head = get_task(name).learning_rates
        space = load_space(None, learning_rates=(body, head))
        for key, rate in (("lr", body), ("head_lr", head)):
            low, high = space[key]["low"], space[key]["high"]
            assert low < rate < high and math.isclose(math.sqrt(low * high), rate)
    assert DEFAULT_SPACE["lr"] == {"low": 1e-5, "high": 1e-3, "log": True}  # the base rates'
    assert load_space(None)["lr"]["high"] == 1e-3
    assert load_space(None, learning_rates=get_task("dense").learning_rates)["lr"]["high"] == 1e-2


def test_a_dense_search_samples_around_the_dense_rates(tiny_bodies, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 32)).astype(np.float32)
    path = tmp_path / "field.npz"
    np.savez(path, x_train=x, y_train=np.cumsum(x, axis=2))  # y shaped like x: a dense task
    summary = search(str(path), trials=1, out=tmp_path / "s", pruner="none", tune="full",
                     align_epochs=0, body=tiny_bodies["bert"], **FAST)
    space = summary["space"]
    assert set(space) == {"lr", "head_lr"}  # the rest is fixed
    assert (space["lr"]["low"], space["lr"]["high"]) == (1e-4, 1e-2)
    assert (space["head_lr"]["low"], space["head_lr"]["high"]) == (1e-3, 1e-1)
    assert 1e-4 <= float(_rows(tmp_path / "s")[0]["lr"]) <= 1e-2


# ------------------------------------------------------------------ a real PostgreSQL server


def _postgres_bin():
    found = [shutil.which("pg_ctl")] + sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return next((Path(p).parent for p in found if p), None)


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server in a temporary folder (Debian package ``postgresql``)."""
    bindir = _postgres_bin()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="PostgreSQL driver missing: pip install 'transmodal[postgresql]'")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="transmodal-pg-")
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = f"{root}/data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", data, "-l", f"{root}/log", "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_storage(postgres_url, tiny_bodies, npz, tmp_path):
    summary = search(str(npz), trials=2, out=tmp_path / "search", space=SPACE, storage=postgres_url,
                     study="pg", pruner="none", body=tiny_bodies["bert"], **FAST)
    assert summary["trials"] == {"complete": 2} and summary["storage"] == postgres_url
    # a second command (another machine, say) continues the same study on the server
    search(str(npz), trials=1, out=tmp_path / "other", space=SPACE, storage=postgres_url, study="pg",
           pruner="none", body=tiny_bodies["bert"], **FAST)
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert sorted(t.number for t in study.get_trials()) == [0, 1, 2]
    assert study.user_attrs["metric"] == "accuracy"
    assert len(_rows(tmp_path / "other")) == 3  # every trial of the study, not only this command's
