"""Reliability: atomic checkpoints, exact resume after a crash (SIGKILL), the NaN/inf guard."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import transmodal
from transmodal.run import checkpoint
from transmodal.cli import main
from transmodal.errors import CheckpointError, ConfigError
from transmodal.engine import NonFiniteError

FAST = dict(batch_size=8, max_tokens=16)  # bit-identical claims are for CPU: those tests pass device="cpu"


@pytest.fixture
def npz(toy_series, tmp_path):
    x, y = toy_series
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y)
    return path


def records(run: Path) -> list[dict]:
    """Per-epoch metrics without the wall-clock seconds."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    assert records(a) == records(b)
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()


def kill_when(proc: subprocess.Popen, run: Path, stage: str, epoch: int, hung_after: float = 1800) -> None:
    """SIGKILL ``proc`` once its checkpoint exists and metrics.jsonl shows ``stage`` at
    ``epoch`` or later. No deadline while the child runs (on a busy machine its imports alone
    may take minutes): polls every 10 ms until then, or fails when the child ends first;
    ``hung_after`` seconds only guard against a child that hangs."""
    deadline = time.monotonic() + hung_after
    metrics, ckpt = run / "metrics.jsonl", run / "checkpoint" / "checkpoint.pt"
    while proc.poll() is None and time.monotonic() < deadline:
        if ckpt.exists() and metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]
            if any(r["stage"] == stage and r["epoch"] >= epoch for r in rows):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return
        time.sleep(0.01)
    hung = proc.poll() is None
    proc.kill()
    out, err = proc.communicate()
    what = f"hung for {hung_after:.0f} s" if hung else f"ended (rc {proc.returncode})"
    pytest.fail(f"the run {what} before {stage} epoch {epoch}: {err[-2000:]}")


def cli_subprocess(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "transmodal.cli", "fit", *args, "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize("extra", [[], ["--augment", "time-warp,jitter,mixup,cutmix",
                                         "--embedder", "conv", "--head-init", "probe",
                                         "--head-norm", "batch", "--dropout", "0.05"]],
                         ids=["plain", "augment-probe"])
def test_sigkill_during_refine_then_resume_is_bit_identical(tiny_bodies, npz, tmp_path, one_thread,
                                                            extra):
    """With --augment the augmentation generator is restored too (same draws after resume);
    a probe-started head with a FeatureNorm restores its running statistics (buffers)."""
    args = ["--data", str(npz), "--body", tiny_bodies["bert"], "--epochs", "14", "--batch-size", "8",
            "--max-tokens", "16", "--seed", "1", "--device", "cpu", *extra]
    run = tmp_path / "killed"
    kill_when(cli_subprocess([*args, "--out", str(run)]), run, "refine", 2)
    assert not (run / "summary.json").exists() and (run / "checkpoint" / "checkpoint.pt").exists()
    # the reference: the same options, uninterrupted (in this process, also on one thread)
    assert main(["fit", *args, "--out", str(tmp_path / "ref"), "--quiet"]) == 0
    assert main(["fit", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(tmp_path / "ref", run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"]["stage"] == "refine" and summary["resumed_from"]["epoch"] >= 1
    assert [r["epoch"] for r in records(run)] == list(range(1, 15))  # nothing duplicated


def test_sigkill_during_align_then_resume_is_bit_identical(tiny_bodies, npz, tmp_path, one_thread):
    """With --embedder rocket: the resumed run fits nothing again; the checkpoint holds the
    biases and standardisation fitted on the training inputs."""
    x, y = np.load(npz)["x"], np.load(npz)["y"]
    try:
        transmodal.fit((x[:8], y[:8]), body=tiny_bodies["bert"], align="l2", epochs=1,
                       align_epochs=1, progress=False, **FAST)
    except ConfigError as e:
        if "not available" in str(e):
            pytest.skip("align stage not built")
        raise
    args = ["--data", str(npz), "--body", tiny_bodies["bert"], "--align", "l2", "--align-epochs", "12",
            "--epochs", "3", "--batch-size", "8", "--max-tokens", "16", "--seed", "1", "--device", "cpu",
            "--embedder", "rocket"]
    run = tmp_path / "killed"
    kill_when(cli_subprocess([*args, "--out", str(run)]), run, "align", 2)
    assert not (run / "summary.json").exists()
    assert main(["fit", *args, "--out", str(tmp_path / "ref"), "--quiet"]) == 0
    assert main(["fit", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(tmp_path / "ref", run)


def test_crash_after_logging_before_checkpoint_rewinds_metrics(tiny_bodies, toy_series, tmp_path,
                                                               monkeypatch, one_thread):
    """Epochs logged after the last checkpoint are dropped and redone, never duplicated;
    checkpoint_every > 1 and early stopping resume exactly too."""
    x, y = toy_series
    opts = dict(body=tiny_bodies["bert"], epochs=9, checkpoint_every=3, patience=4, seed=2,
                device="cpu", progress=False, **FAST)
    transmodal.fit((x, y), out=tmp_path / "ref", **opts)
    real = checkpoint.Checkpointer.save
    saves = []

    def crash_on_second_save(self, **kw):
        saves.append(kw["epoch"])
        if len(saves) == 2:  # epoch 6 was logged, its checkpoint never written
            raise KeyboardInterrupt
        return real(self, **kw)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        transmodal.fit((x, y), out=tmp_path / "run", **opts)
    monkeypatch.undo()
    assert len(records(tmp_path / "run")) > 3  # the log ran ahead of the checkpoint
    with pytest.raises(ConfigError, match="in-memory arrays; pass the same arrays"):
        transmodal.fit(resume=tmp_path / "run")
    transmodal.fit((x, y), resume=tmp_path / "run", progress=False)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_cli_help_lists_the_reliability_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert all(opt in out for opt in ("--resume RUN", "--checkpoint-every", "--on-nan"))


def test_resume_refusals(tiny_bodies, npz, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # keep the finished run's checkpoint
    transmodal.fit(str(npz), out=run, body=tiny_bodies["bert"], epochs=2, progress=False, **FAST)
    with pytest.raises(ConfigError, match="already complete"):
        transmodal.fit(resume=run)
    (run / "summary.json").unlink()  # as if it had been killed after its last checkpoint
    with pytest.raises(ConfigError, match="--epochs 5 \\(the run has 2\\); a resumed run keeps its own"):
        transmodal.fit(resume=run, epochs=5)
    with pytest.raises(ConfigError, match="--overwrite conflict"):
        transmodal.fit(resume=run, overwrite=True)
    with pytest.raises(ConfigError, match="data differ"):
        x, y = np.load(npz)["x"], np.load(npz)["y"]
        transmodal.fit((x[::-1], y[::-1]), resume=run)
    transmodal.fit(resume=run, epochs=2, progress=False)  # repeating a stored value is fine
    assert (run / "summary.json").exists()
    with pytest.raises(CheckpointError, match="not a run folder"):
        transmodal.fit(resume=tmp_path / "nothing")


# ----------------------------------------------------------------------------- atomic writes


def test_failed_checkpoint_write_keeps_the_previous_one(tiny_bodies, toy_series, tmp_path,
                                                        monkeypatch, one_thread):
    x, y = toy_series
    opts = dict(body=tiny_bodies["bert"], epochs=5, seed=4, checkpoint_every=1, device="cpu",
                progress=False, **FAST)
    real = checkpoint._serialize
    calls = []

    def disk_full_on_third(payload, f):
        calls.append(1)
        if len(calls) == 3:  # half a file, then the disk is full
            buf = io.BytesIO()
            real(payload, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise OSError(28, "No space left on device")
        real(payload, f)

    monkeypatch.setattr(checkpoint, "_serialize", disk_full_on_third)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*No space left on device.*"
                                              "the previous checkpoint is kept"):
        transmodal.fit((x, y), out=tmp_path / "run", **opts)
    monkeypatch.undo()
    folder = tmp_path / "run" / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]  # no half-written .tmp
    ckpt = checkpoint.load(folder / "checkpoint.pt")
    assert (ckpt["stage"], ckpt["epoch"], ckpt["done"]) == ("refine", 2, False)
    assert not (tmp_path / "run" / "summary.json").exists()
    # and it resumes to the same result as a run that never failed
    transmodal.fit((x, y), resume=tmp_path / "run", progress=False)
    transmodal.fit((x, y), out=tmp_path / "ref", **opts)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_checkpoint_file_format_is_weights_only(tiny_bodies, toy_series, tmp_path, monkeypatch):
    import shutil

    x, y = toy_series
    transmodal.fit((x, y), out=tmp_path / "done", body=tiny_bodies["bert"], epochs=2, progress=False, **FAST)
    assert not (tmp_path / "done" / "checkpoint").exists()  # a finished run drops its checkpoint
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # keep it here, to read it
    transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], epochs=2, progress=False, **FAST)
    path = tmp_path / "run" / "checkpoint" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)  # nothing in it needs pickle
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["stage"] == "refine"
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "state", "best_model",
                         "metrics", "epoch", "step", "done", "fingerprint"}
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda", "generators"}
    assert set(ckpt["rng"]["generators"]) == {"loader"}
    assert {"best_epoch", "best_val", "bad_epochs", "history"} <= set(ckpt["state"])
    assert ckpt["done"] and ckpt["epoch"] == 2


def test_automatic_interval_keeps_writing_time_small(tmp_path, monkeypatch):
    ck = checkpoint.Checkpointer(tmp_path, every=0)
    assert ck.due(1)  # the first epoch always: it measures what a write costs
    clock = [100.0]
    monkeypatch.setattr(checkpoint.time, "perf_counter", lambda: clock[0])
    ck._written_at, ck._write_seconds = 100.0, 0.5
    clock[0] = 105.0
    assert not ck.due(2) and ck.due(2, last=True)  # the end of a stage always
    clock[0] = 100.0 + checkpoint.AUTO_RATIO * 0.5
    assert ck.due(3)
    fixed = checkpoint.Checkpointer(tmp_path, every=3)
    assert [e for e in range(1, 10) if fixed.due(e)] == [3, 6, 9]


# ----------------------------------------------------------------------------- NaN / inf


def inject(monkeypatch, bad_calls: dict[int, str]):
    """Make training batch number k (1-based) give a NaN loss ("loss") or a finite loss with
    NaN gradients ("grad")."""
    from transmodal.tasks.classification import Classification

    real = Classification.loss
    count = [0]

    def loss_fn(task, out, y):  # the task owns the loss: patch it there
        loss = real(task, out, y)
        if not out.requires_grad:  # validation
            return loss
        count[0] += 1
        kind = bad_calls.get(count[0])
        if kind == "loss":
            return loss * float("nan")
        if kind == "grad":  # sqrt at 0: value 0, gradient inf * 0 = NaN
            return loss + torch.sqrt((out * 0).sum())
        return loss

    monkeypatch.setattr(Classification, "loss", loss_fn)


@pytest.mark.parametrize("kind, what", [("loss", "loss"), ("grad", "gradient")])
def test_non_finite_stops_with_stage_epoch_step(tiny_bodies, toy_series, tmp_path, monkeypatch, kind, what):
    x, y = toy_series  # 32 training samples, batch 8: 4 steps per epoch
    inject(monkeypatch, {6: kind})
    with pytest.raises(NonFiniteError, match=f"non-finite {what} in stage refine, epoch 2, step 6; .*"
                                             "the last good checkpoint \\(refine epoch 1\\) is kept"):
        transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], epochs=3,
                       checkpoint_every=1, progress=False, **FAST)
    assert not (tmp_path / "run" / "summary.json").exists()
    assert checkpoint.load(tmp_path / "run" / "checkpoint" / "checkpoint.pt")["epoch"] == 1


def test_non_finite_cli_one_line_exit_2(tiny_bodies, npz, tmp_path, monkeypatch, capsys):
    inject(monkeypatch, {2: "grad"})
    rc = main(["fit", "--data", str(npz), "--body", tiny_bodies["bert"], "--epochs", "2",
               "--batch-size", "8", "--max-tokens", "16", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: non-finite gradient in stage refine, epoch 1, step 2;")


def test_on_nan_skip_drops_batches_and_counts_them(tiny_bodies, toy_series, tmp_path, monkeypatch):
    x, y = toy_series
    inject(monkeypatch, {2: "loss", 3: "grad", 7: "loss"})
    run = transmodal.fit((x, y), out=tmp_path / "run", body=tiny_bodies["bert"], epochs=3,
                         on_nan="skip", progress=False, **FAST)
    rows = records(tmp_path / "run")
    assert [r["skipped_batches"] for r in rows] == [2, 1, 0]
    assert [r["step"] for r in rows] == [2, 5, 9]  # no optimizer step for a dropped batch
    assert run.summary["skipped_batches"] == 3
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
