"""Several processes (torchrun, gloo on CPU): one run folder written by the main process only,
metrics equal to one process with the same global batch; refused launches and resumes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.engine.distributed import check_process_group, check_resume_processes
from transmodal.errors import CheckpointError, ConfigError
from transmodal.run import checkpoint

# 2 processes x batch 8 against 1 process x batch 16; the gradient average over two ranks and
# the loss over one batch of 16 add the same numbers in another order: float32 rounding only
TOLERANCE = dict(rel=1e-5, abs=1e-6)
# With the head's BatchNorm (--head-norm batch, the default: statistics of the global batch) the
# losses of this toy are ill-conditioned: the body's last LayerNorm only shifts and scales what
# the BatchNorm removes, so its exact gradient is 0 and its computed one rounding noise (3e-7
# against 1e-2 for the other weights, measured), which AdamW turns into steps of size lr that
# the running statistics used for validation lag behind. Measured in ONE process: the same
# moments combined in another order (two halves, as the 2 ranks do) move val_loss by up to
# 2.3e-2 and train_loss by 1.2e-4; 2 ranks against 1 process: 6.3e-3 and 1.2e-4. Per-process
# statistics (before) were off by 1.4 (train_loss, epoch 1) to 20.
BATCH_NORM_TOLERANCE = {"train_loss": dict(rel=1e-3, abs=1e-6), "val_loss": dict(rel=5e-2, abs=1e-6)}


def tolerance(head_norm: str, key: str) -> dict[str, float]:
    """How close a logged value of 2 processes must be to 1 process at the same global batch."""
    return BATCH_NORM_TOLERANCE.get(key, TOLERANCE) if head_norm == "batch" else TOLERANCE


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory, tiny_bodies):
    """The tiny BERT without dropout: 2 ranks draw other dropout masks than 1 process would."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert0") / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    for name in Path(tiny_bodies["bert"]).iterdir():  # the MiniLM tokenizer files
        if "token" in name.name or name.name == "vocab.txt":
            shutil.copy(name, folder / name.name)
    return str(folder)


@pytest.fixture
def npz40(tmp_path):
    """40 training series: 32 train + 8 validation, so 16 divides the training split."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 48)
    y = np.array([0, 1] * 30)
    x = (np.where(y[:, None] == 0, np.sin(t), np.sign(np.sin(t))) + 0.3 * rng.normal(size=(60, 48)))
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x[:40].astype(np.float32), y_train=y[:40], x_test=x[40:].astype(np.float32),
             y_test=y[40:])
    return path


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two torchrun ranks import torch and transformers: ~1 min on 2 busy cores
@pytest.mark.parametrize("head_norm", ["none", "batch"])  # batch: statistics of the global batch
def test_two_processes_match_one_with_the_same_global_batch(no_dropout_bert, npz40, tmp_path, head_norm):
    common = ["--data", str(npz40), "--body", no_dropout_bert, "--epochs", "4", "--max-tokens", "16",
              "--lr", "1e-3", "--head-lr", "1e-2", "--device", "cpu", "--quiet", "--checkpoint-every", "1",
              "--head-norm", head_norm]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "transmodal.cli", "fit", *common,
                           "--batch-size", "8", "--out", str(two)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # the main process reports, once
    assert main(["fit", *common, "--batch-size", "16", "--out", str(tmp_path / "one")]) == 0
    # one complete run folder, every file written once
    for name in ("config.yaml", "summary.json", "model/model.safetensors", "report/index.html",
                 "report/learning_curves.png"):
        assert (two / name).is_file(), name
    assert not (two / "checkpoint").exists() and not list(two.rglob("*.tmp"))
    a, b = _records(tmp_path / "one"), _records(two)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]  # no line logged twice
    for ra, rb in zip(a, b):
        assert rb["step"] == ra["step"] == 2 * ra["epoch"]  # 32 samples / global batch 16
        for key in ("train_loss", "val_loss", "val_accuracy", "lr", "head_lr"):
            assert rb[key] == pytest.approx(ra[key], **tolerance(head_norm, key)), (ra["epoch"], key)
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((two / "summary.json").read_text())
    assert sb["best_epoch"] == sa["best_epoch"] and sb["n_train"] == sa["n_train"] == 32
    for split in ("val", "test"):  # validation and test outputs gathered from both ranks
        for key, value in sa["metrics"][split].items():
            assert sb["metrics"][split][key] == pytest.approx(value, **TOLERANCE), (split, key)


@pytest.mark.slow  # two torchrun ranks: ~1 min on 2 busy cores, each
@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_folds_side_by_side_and_refit_on_two_processes_match_one(no_dropout_bert, npz40, tmp_path,
                                                                distributed):
    """--folds 2 --fold-epoch common --refit on 2 ranks (batch 5 each) as on 1 process (batch
    10): the folds' lockstep epochs, the pooled choice and the refit on all 40 samples."""
    common = ["--data", str(npz40), "--body", no_dropout_bert, "--epochs", "3", "--max-tokens", "16",
              "--lr", "1e-3", "--head-lr", "1e-2", "--device", "cpu", "--quiet", "--head-norm", "none",
              "--folds", "2", "--fold-epoch", "common", "--refit", "--baselines", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    two = tmp_path / "two"
    sharded = ["--distributed", "fsdp"] if distributed == "fsdp" else []
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "transmodal.cli", "fit", *common, *sharded,
                           "--batch-size", "5", "--out", str(two)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["fit", *common, "--batch-size", "10", "--out", str(tmp_path / "one")]) == 0
    a, b = ([r for r in _records(run) if r["stage"] == "refine"] for run in (tmp_path / "one", two))
    sb = json.loads((two / "summary.json").read_text())
    epoch = sb["common_epoch"]["0"]
    assert [(r["member"], r["epoch"]) for r in b] == (
        [(m, e) for e in (1, 2, 3) for m in (0, 1)] + [(2, e) for e in range(1, epoch + 1)])
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            if key in ra:  # the refit has no holdout
                assert rb[key] == pytest.approx(ra[key], **TOLERANCE), (ra["member"], ra["epoch"], key)
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert sb["common_epoch"] == sa["common_epoch"]
    for split in ("val", "test"):
        assert sb["metrics"][split]["accuracy"] == pytest.approx(sa["metrics"][split]["accuracy"])


def _torchrun(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", "2", "-m", "transmodal.cli", "fit", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _kill_after_epochs(proc, run, epochs):
    """SIGKILL a torchrun launch (its ranks, then torchrun) once ``epochs`` lines are logged."""
    import time

    import psutil

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log = run / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= epochs:
            break
        time.sleep(0.05)
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()


@pytest.mark.slow  # three 2-process launches: ~2-3 min on 2 busy cores
def test_two_process_run_killed_then_resumed_is_bit_identical(no_dropout_bert, npz40, tmp_path):
    args = ["--data", str(npz40), "--body", no_dropout_bert, "--epochs", "6", "--max-tokens", "16",
            "--lr", "1e-3", "--head-lr", "1e-2", "--device", "cpu", "--quiet", "--checkpoint-every", "1",
            "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run, ref = tmp_path / "run", tmp_path / "ref"
    _kill_after_epochs(_torchrun([*args, "--out", str(run)], env), run, 3)
    assert not (run / "summary.json").exists() and (run / "checkpoint" / "checkpoint.pt").exists()
    _resume_equals_uninterrupted(args, env, run, ref)


def _resume_equals_uninterrupted(args: list[str], env: dict[str, str], run: Path, ref: Path) -> None:
    """Resume the killed 2-process ``run``, train ``ref`` uninterrupted with ``args``: every logged
    record (but its wall time) and every score must be equal."""
    resumed = _torchrun(["--resume", str(run), "--quiet"], env)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    whole = _torchrun([*args, "--out", str(ref)], env)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-3000:]
    assert _records(run) == [{**r, "seconds": x["seconds"]} for r, x in zip(_records(ref), _records(run))]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    assert a["metrics"] == b["metrics"] and a["resumed_from"]["stage"] == "refine"


def _nan_on_rank1(args: list[str], out: Path, at: int) -> subprocess.CompletedProcess:
    """A 2-process fit whose loss is NaN on rank 1 only at its training batch ``at``
    (``nan_on_one_rank.py``); each rank's trained weights land in ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NAN_AT": str(at),
           "WEIGHTS_OUT": str(out), "PYTHONPATH": os.pathsep.join(sys.path)}
    # torchrun polls its ranks every 2 s (not 0.1 s): a rank that stops a moment after the
    # other then exits by itself instead of by torchrun's SIGTERM, and both exit codes show
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "--monitor-interval", "2",
                           str(Path(__file__).with_name("nan_on_one_rank.py")),
                           "fit", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three 2-process launches: ~2 min on 2 busy cores
@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_a_nan_loss_on_one_rank_is_skipped_by_every_rank(no_dropout_bert, npz40, tmp_path, distributed):
    run = tmp_path / "run"
    args = ["--data", str(npz40), "--body", no_dropout_bert, "--epochs", "2", "--max-tokens", "16",
            "--batch-size", "8", "--device", "cpu", "--quiet", "--on-nan", "skip",
            "--distributed", distributed, "--out", str(run)]
    proc = _nan_on_rank1(args, tmp_path, at=3)  # rank 1's first batch of epoch 2
    assert proc.returncode == 0, proc.stderr[-3000:]  # no rank waits forever: within the timeout
    records = _records(run)
    assert [(r["step"], r["skipped_batches"]) for r in records] == [(2, 0), (3, 1)]  # both skipped it
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same model


@pytest.mark.slow
def test_a_nan_loss_on_one_rank_stops_every_rank_with_one_line(no_dropout_bert, npz40, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(npz40), "--body", no_dropout_bert, "--epochs", "2", "--max-tokens", "16",
            "--batch-size", "8", "--device", "cpu", "--quiet", "--out", str(run)]  # --on-nan stop
    proc = _nan_on_rank1(args, tmp_path, at=2)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: non-finite loss (on 1 of 2 processes) in stage refine, epoch 1, step 2; "
                      "lower --lr or check the data scale, or pass --on-nan skip; "
                      "no checkpoint was written yet"]
    codes = [(tmp_path / f"exit{r}.txt").read_text() for r in (0, 1)]
    assert codes == ["2", "2"] and proc.returncode != 0  # both ranks stopped alike
    assert not (run / "summary.json").exists()


def test_a_launch_without_process_group_is_refused(monkeypatch):
    lonely = SimpleNamespace(num_processes=1, distributed_type="DistributedType.NO")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 but this process joined no process group"):
        check_process_group(lonely)
    check_process_group(SimpleNamespace(num_processes=2, distributed_type="MULTI_CPU"))  # a real group
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_process_group(lonely)


def test_resume_with_another_process_count_is_refused(tiny_bodies, npz40, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = checkpoint.Checkpointer.save

    def stop_after_first(self, **kw):
        real(self, **kw)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(checkpoint.Checkpointer, "save", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        transmodal.fit(str(npz40), out=run, body=tiny_bodies["bert"], epochs=3, batch_size=8,
                       max_tokens=16, checkpoint_every=1, progress=False)
    monkeypatch.undo()
    path = run / "checkpoint" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["processes"] == 1  # recorded by the run that wrote it
    ckpt["processes"] = 2  # as if two processes had trained it
    torch.save(ckpt, path)
    assert main(["fit", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "trained with 2 process(es) and this launch has 1; resume with 2" in err
    assert len(err.strip().splitlines()) == 1
    assert not (run / "summary.json").exists()
    check_resume_processes({"stage": "refine"}, SimpleNamespace(num_processes=1), "RUN")  # older: 1
    with pytest.raises(CheckpointError):
        check_resume_processes({"processes": 1}, SimpleNamespace(num_processes=2), "RUN")


def _norms_on_rank(rank: int, world: int, init: str, out: str) -> None:
    """One process of :func:`test_head_norms_use_the_global_batch_of_uneven_ranks`: its share
    of each case's rows through a training FeatureNorm/TokenNorm, its outputs, input gradients
    and running statistics saved for the test process."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results = {}
    for case, (norm, x, weights, sizes) in _norm_cases().items():
        lo = sum(sizes[:rank])
        part = x[lo: lo + sizes[rank]].clone().requires_grad_()
        y = norm.train()(part)
        (y * weights[lo: lo + sizes[rank]]).sum().backward()  # this rank's share of the loss
        results[case] = (y.detach(), part.grad, norm.running_mean.clone(), norm.running_var.clone())
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _norm_cases():
    """name -> (norm, inputs of every rank, loss weights, rows per rank), the same in every process."""
    from transmodal.models.heads.pooled import FeatureNorm, TokenNorm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=g) * 0.2 + 3.0  # (B, D): a large mean, a small spread
    tokens = torch.randn(3, 4, 6, generator=g) + 1.0  # (B, S, D)
    return {"uneven": (FeatureNorm(6), x, torch.randn(8, 6, generator=g), [5, 3]),
            # rank 0 alone holds 1 sample (it would use running statistics), the global batch 3
            "tokens": (TokenNorm(6), tokens, torch.randn(3, 4, 6, generator=g), [1, 2]),
            "one sample": (FeatureNorm(6), x[:1], torch.randn(1, 6, generator=g), [1, 0])}


def test_head_norms_use_the_global_batch_of_uneven_ranks(tmp_path):
    """2 gloo processes with 5 and 3 samples standardise like one process with the 8 (outputs,
    input gradients through the all-reduce, running statistics); a global batch of one sample
    uses the running statistics, as in one process."""
    import torch.multiprocessing as mp

    mp.spawn(_norms_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for case, (norm, x, weights, sizes) in _norm_cases().items():
        whole = x.clone().requires_grad_()
        y = norm.train()(whole)
        (y * weights).sum().backward()
        out = torch.cat([r[case][0] for r in ranks])
        grad = torch.cat([r[case][1] for r in ranks])
        torch.testing.assert_close(out, y.detach(), rtol=1e-5, atol=1e-5, msg=case)
        torch.testing.assert_close(grad, whole.grad, rtol=1e-4, atol=1e-5, msg=case)
        for r in ranks:  # both ranks hold the running statistics of the whole batch
            torch.testing.assert_close(r[case][2], norm.running_mean, msg=case)
            torch.testing.assert_close(r[case][3], norm.running_var, msg=case)
    assert not torch.equal(ranks[0]["uneven"][2], torch.zeros(6))  # they were updated
    assert torch.equal(ranks[0]["one sample"][2], torch.zeros(6))  # not by a 1-sample batch
