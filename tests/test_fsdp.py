"""--distributed fsdp (FSDP2 on CPU, gloo, 2 torchrun processes): one run folder of the usual
format, metrics equal to one process at the same global batch, an exact resume after SIGKILL;
refused launches with one line each."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_distributed import (_kill_after_epochs, _records, _resume_equals_uninterrupted,  # noqa: F401
                              _torchrun, no_dropout_bert, npz40,  # (these two are fixtures)
                              BATCH_NORM_TOLERANCE)

from transmodal.cli import main
from transmodal.engine.distributed import meta_twin
from transmodal.errors import CheckpointError
from transmodal.run import checkpoint

# 2 processes x batch 8 (sharded: reduce-scatter of the gradients, all-gathered weights) against
# 1 process x batch 16: the same float32 numbers added in other orders. Measured: largest
# relative difference 7.6e-6 (a validation loss of 0.0132), so 1e-4 leaves room for the order.
TOLERANCE = dict(rel=1e-4, abs=1e-6)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _common(bert, npz, epochs):
    return ["--data", str(npz), "--body", bert, "--epochs", str(epochs), "--max-tokens", "16",
            "--lr", "1e-3", "--head-lr", "1e-2", "--device", "cpu", "--quiet", "--checkpoint-every", "1"]


@pytest.mark.slow  # one 2-process launch and one in-process fit: ~1.5 min on 2 busy cores
@pytest.mark.parametrize("head_norm", ["none", "batch"])  # batch: statistics of the global batch
def test_fsdp_two_processes_match_one_and_save_the_usual_model(no_dropout_bert, npz40, tmp_path, head_norm):
    common = [*_common(no_dropout_bert, npz40, 4), "--head-norm", head_norm]
    # batch: the losses are ill-conditioned in this toy, the weights of the body's last
    # LayerNorm drift by rounding noise (test_distributed.BATCH_NORM_TOLERANCE says why)
    tol = BATCH_NORM_TOLERANCE if head_norm == "batch" else {}
    two, one = tmp_path / "two", tmp_path / "one"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "transmodal.cli", "fit", *common,
                           "--batch-size", "8", "--distributed", "fsdp", "--out", str(two)],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # the main process reports, once
    assert main(["fit", *common, "--batch-size", "16", "--out", str(one)]) == 0
    for name in ("config.yaml", "summary.json", "model/model.safetensors", "report/index.html",
                 "report/learning_curves.png"):
        assert (two / name).is_file(), name
    assert not (two / "checkpoint").exists() and not list(two.rglob("*.tmp"))
    # the model folder is a plain one: the same files and weight names as a 1-process run
    assert sorted(p.name for p in (two / "model").iterdir()) == sorted(p.name for p in (one / "model").iterdir())
    from safetensors.torch import load_file

    wa, wb = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
    if head_norm == "none":
        assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    a, b = _records(one), _records(two)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]  # no line logged twice
    for ra, rb in zip(a, b):
        assert rb["step"] == ra["step"] == 2 * ra["epoch"]  # 32 samples / global batch 16
        for key in ("train_loss", "val_loss", "val_accuracy", "lr", "head_lr"):
            assert rb[key] == pytest.approx(ra[key], **tol.get(key, TOLERANCE)), (ra["epoch"], key)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert sb["best_epoch"] == sa["best_epoch"] and sb["n_train"] == sa["n_train"] == 32
    for split in ("val", "test"):
        for key, value in sa["metrics"][split].items():
            assert sb["metrics"][split][key] == pytest.approx(value, **TOLERANCE), (split, key)
    # the saved model, loaded by `transmodal predict` in this one process, gives the scores the
    # 2-process run measured on its gathered model, and the probabilities of the 1-process model
    x_test = np.load(npz40)["x_test"]
    np.save(tmp_path / "x.npy", x_test)
    for run in (one, two):
        assert main(["predict", str(run), "--data", str(tmp_path / "x.npy"), "--proba",
                     "--out", str(tmp_path / f"{run.name}.csv")]) == 0
    pa, pb = (np.loadtxt(tmp_path / f"{n}.csv", delimiter=",", skiprows=1) for n in ("one", "two"))
    if head_norm == "none":
        np.testing.assert_allclose(pb, pa, rtol=1e-3, atol=1e-5)
    accuracy = float(np.mean(pb.argmax(1) == np.load(npz40)["y_test"]))
    assert accuracy == sb["metrics"]["test"]["accuracy"]


@pytest.mark.slow  # three 2-process launches: ~3 min on 2 busy cores
def test_fsdp_run_killed_then_resumed_is_bit_identical(no_dropout_bert, npz40, tmp_path):
    args = [*_common(no_dropout_bert, npz40, 6), "--batch-size", "8", "--distributed", "fsdp"]
    run, ref = tmp_path / "run", tmp_path / "ref"
    _kill_after_epochs(_torchrun([*args, "--out", str(run)], ENV), run, 3)
    assert not (run / "summary.json").exists()
    ckpt = checkpoint.load(run / "checkpoint" / "checkpoint.pt")
    assert ckpt["sharded"] and ckpt["stage"] == "refine" and ckpt["processes"] == 2
    # full tensors under the bare model's names, written by the main process alone
    assert "head.fc.weight" in ckpt["model"] and not any("_local" in k for k in ckpt["model"])
    _resume_equals_uninterrupted(args, ENV, run, ref)


def test_fsdp_in_one_process_is_refused(tiny_bodies, npz40, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "--data", str(npz40), "--body", tiny_bodies["bert"], "--epochs", "1",
                 "--distributed", "fsdp", "--quiet", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--distributed fsdp shards the model over several processes" in err[0]
    assert not run.exists()  # refused before the run folder


def test_accelerate_use_fsdp_is_refused(tiny_bodies, npz40, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    run = tmp_path / "run"
    assert main(["fit", "--data", str(npz40), "--body", tiny_bodies["bert"], "--epochs", "1",
                 "--quiet", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --distributed fsdp" in err[0]
    assert not run.exists()


def test_unknown_distributed_and_task_lists_are_refused(capsys):
    assert main(["fit", "--data", "x.npz", "--distributed", "zero3"]) == 2
    assert "unknown --distributed 'zero3'; choose one of ddp, fsdp" in capsys.readouterr().err
    from transmodal.config import FitConfig
    from transmodal.errors import ConfigError

    with pytest.raises(ConfigError, match="--distributed fsdp is not supported for several tasks"):
        FitConfig(tasks=[{"name": "a", "data": "a.npz"}, {"name": "b", "data": "b.npz"}],
                  head="generate", distributed="fsdp")


def test_a_sharded_checkpoint_does_not_restore_into_a_whole_model(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = {"stage": "refine", "model": model.state_dict(), "optimizer": {}, "sharded": True,
            "rng": checkpoint.rng_state()}
    with pytest.raises(CheckpointError, match="written by a sharded model and this run's model is "
                                              "whole; resume with the run's own --distributed"):
        checkpoint.restore(ckpt, model=model)


def test_meta_twin_holds_no_weights_but_the_structure():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model[0].bias.requires_grad_(False)
    twin = meta_twin(model)
    assert all(p.is_meta for p in twin.parameters())  # no copy of the weights
    assert not twin[0].bias.requires_grad and twin[0].weight.requires_grad
    assert torch.equal(twin[1].running_var, model[1].running_var)  # buffers are copied
    assert twin[1].running_var is not model[1].running_var
    twin.load_state_dict(model.state_dict(), assign=True)
    x = torch.randn(5, 3)
    model.eval(), twin.eval()
    assert torch.equal(twin(x), model(x))


def test_scalar_parameters_are_refused_before_sharding():
    from types import SimpleNamespace

    from transmodal.engine.distributed import check_sharding
    from transmodal.errors import ConfigError

    model = torch.nn.Linear(3, 2)
    model.logit_scale = torch.nn.Parameter(torch.tensor(2.0))  # as a contrastive head's
    two = SimpleNamespace(num_processes=2)
    with pytest.raises(ConfigError, match=r"scalar parameters \(logit_scale\), which FSDP2 cannot shard"):
        check_sharding("fsdp", two, model)
    check_sharding("ddp", two, model)  # DDP replicates it
    check_sharding("fsdp", two, torch.nn.Linear(3, 2))
