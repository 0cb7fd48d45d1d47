"""--report-to tensorboard,mlflow: the trackers hold what metrics.jsonl holds (read back)."""

import json

import pytest

import transmodal
from transmodal.cli import main
from transmodal.engine.trackers import tracker_callbacks
from transmodal.errors import ConfigError

FAST = dict(epochs=3, batch_size=8, max_tokens=16, progress=False)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_event_file_holds_the_metrics_log(tiny_bodies, toy_series, tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = toy_series
    run_dir = tmp_path / "run"
    transmodal.fit((x, y), out=run_dir, body=tiny_bodies["bert"], report_to="tensorboard", **FAST)
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    records = _records(run_dir)
    for rec in records:
        for key, value in rec.items():
            if key in ("stage", "epoch") or not isinstance(value, (int, float)):
                continue  # align's "method" is a name
            (point,) = [e for e in events.Scalars(f"{rec['stage']}/{key}") if e.step == rec["epoch"]]
            assert point.value == pytest.approx(value, rel=1e-6, abs=1e-7), (rec["stage"], key)
    assert len(events.Scalars("refine/val_accuracy")) == 3


@pytest.mark.slow  # MLflow creates its SQLite schema (~30 migrations): ~10-30 s on 2 busy cores
def test_mlflow_store_holds_the_metrics_log(tiny_bodies, toy_series, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    x, y = toy_series
    data = {"x_train": x[:30], "y_train": y[:30], "x_test": x[30:], "y_test": y[30:]}
    run_dir = tmp_path / "run"
    run = transmodal.fit(data, out=run_dir, body=tiny_bodies["bert"], report_to="mlflow", lr=3e-4,
                         align="l2", align_epochs=2, **FAST)
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("transmodal").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["lr"] == "0.0003" and found.data.params["report_to"] == "mlflow"
    records = _records(run_dir)
    refined = [r for r in records if r["stage"] == "refine"]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "head_lr"):
        history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, f"refine/{key}")}
        assert history == pytest.approx({r["epoch"]: r[key] for r in refined}), key
    aligned = [r for r in records if r["stage"] == "align"]
    assert len(aligned) == 2  # both stages reach the tracker
    history = client.get_metric_history(found.info.run_id, "align/distance")
    assert {m.step: m.value for m in history} == pytest.approx({r["epoch"]: r["distance"] for r in aligned})
    final = found.data.metrics
    assert final["final/test/accuracy"] == pytest.approx(run.summary["metrics"]["test"]["accuracy"])
    assert final["final/val/accuracy"] == pytest.approx(run.summary["metrics"]["val"]["accuracy"])


def test_only_the_main_process_tracks(tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    assert tracker_callbacks("none", tmp_path, {}) == []
    assert [type(t).__name__ for t in tracker_callbacks("tensorboard", tmp_path, {})] == ["TensorBoardTracker"]
    assert tracker_callbacks("tensorboard", tmp_path, {}, main_process=False) == []


@pytest.mark.parametrize("value, message", [
    ("wandb", "unknown --report-to 'wandb'"),
    ("none,mlflow", "unknown --report-to 'none,mlflow'"),
])
def test_bad_report_to_is_one_line(value, message, tmp_path, capsys):
    rc = main(["fit", "--data", "x.npz", "--report-to", value, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_tracker_extra_not_installed_is_one_line(tiny_bodies, toy_npz, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    rc = main(["fit", "--data", str(toy_npz), "--body", tiny_bodies["bert"], "--epochs", "1",
               "--report-to", "tensorboard", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "the tensorboard package is not installed; pip install 'transmodal[tensorboard]'" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_tensorboard_needs_a_run_folder():
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    with pytest.raises(ConfigError, match="pass --out RUN"):
        tracker_callbacks("tensorboard", None, {})


def _crash_then_resume(x, y, run_dir, monkeypatch, **opts):
    """Fit 9 refine epochs with a checkpoint every 3, crash on the second checkpoint write
    (epochs 4-6 were trained and logged, only epoch 3 is saved), then resume to the end."""
    from transmodal.run import checkpoint

    real, saves = checkpoint.Checkpointer.save, []

    def crash_on_second_save(self, **kw):
        saves.append(kw["epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt
        return real(self, **kw)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        transmodal.fit((x, y), out=run_dir, body=opts.pop("body"), epochs=9, checkpoint_every=3,
                       seed=2, device="cpu", batch_size=8, max_tokens=16, progress=False, **opts)
    monkeypatch.undo()
    assert len(_records(run_dir)) == 6  # the log ran ahead of the checkpoint (epoch 3)
    return transmodal.fit((x, y), resume=run_dir, progress=False)


def _scalar_events(folder):
    """(tag, step, value) of every scalar in every event file of ``folder``, as written."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                found.append((v.tag, event.step, float(tensor_util.make_ndarray(v.tensor))))
    return found


def test_resumed_run_continues_the_tensorboard_run(tiny_bodies, toy_series, tmp_path, monkeypatch,
                                                   one_thread):
    """Same folder, steps go on, no epoch written twice (in the raw event files, not only in
    TensorBoard's view, which hides steps that go back)."""
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    x, y = toy_series
    run_dir = tmp_path / "run"
    _crash_then_resume(x, y, run_dir, monkeypatch, body=tiny_bodies["bert"], report_to="tensorboard")
    events = _scalar_events(run_dir / "tensorboard")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per process
    steps = [step for tag, step, _ in events if tag == "refine/val_accuracy"]
    assert steps == list(range(1, 10))  # each epoch once, in order
    written = {(tag, step): value for tag, step, value in events}
    assert len(written) == len(events)
    for rec in _records(run_dir):
        assert written[("refine/val_loss", rec["epoch"])] == pytest.approx(rec["val_loss"], rel=1e-6)
    assert json.loads((run_dir / "trackers.json").read_text()) == {"tensorboard": {"sent": 9}}


def test_tracker_added_at_resume_gets_the_checkpointed_epochs(tiny_bodies, toy_series, tmp_path,
                                                              monkeypatch, one_thread):
    """--report-to may change on resume: a new tracker run first gets the checkpoint's epochs."""
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from transmodal.run import checkpoint

    x, y = toy_series
    run_dir = tmp_path / "run"
    real = checkpoint.Checkpointer.save

    def crash_at_4(self, **kw):
        if kw["epoch"] == 4:
            raise KeyboardInterrupt
        return real(self, **kw)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        transmodal.fit((x, y), out=run_dir, body=tiny_bodies["bert"], epochs=5, checkpoint_every=1,
                       device="cpu", batch_size=8, max_tokens=16, progress=False)
    monkeypatch.undo()
    transmodal.fit((x, y), resume=run_dir, report_to="tensorboard", progress=False)
    steps = [step for tag, step, _ in _scalar_events(run_dir / "tensorboard") if tag == "refine/val_accuracy"]
    assert steps == [1, 2, 3, 4, 5]  # 1-3 from the checkpoint's log, 4-5 as they were trained


@pytest.mark.slow  # MLflow creates its SQLite schema (~30 migrations): ~10-30 s on 2 busy cores
def test_resumed_run_continues_the_mlflow_run(tiny_bodies, toy_series, tmp_path, monkeypatch,
                                              one_thread):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    x, y = toy_series
    run_dir = tmp_path / "run"
    run = _crash_then_resume(x, y, run_dir, monkeypatch, body=tiny_bodies["bert"], report_to="mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("transmodal").experiment_id])
    assert found.info.status == "FINISHED"
    assert json.loads((run_dir / "trackers.json").read_text())["mlflow"] == {
        "run_id": found.info.run_id, "sent": 9}
    history = client.get_metric_history(found.info.run_id, "refine/val_loss")
    assert sorted(m.step for m in history) == list(range(1, 10))  # each epoch once
    assert {m.step: m.value for m in history} == pytest.approx(
        {r["epoch"]: r["val_loss"] for r in _records(run_dir)})
    assert found.data.metrics["final/val/accuracy"] == pytest.approx(run.summary["metrics"]["val"]["accuracy"])
