"""One model, many tasks (OFA, issue 12 part 4): two tasks with different input shapes share a
tiny random BERT body and decoder; per-task scores, save/load/predict with --task-name, adding
a task with no new head, determinism, and every bad input (API and CLI exit code 2)."""

import json

import numpy as np
import pytest
import torch

import transmodal
from transmodal.cli import main
from transmodal.errors import ConfigError, DataError

FAST = dict(batch_size=8, max_tokens=16, progress=False, head="generate")


def waves(n=48, seed=0):
    """(N, 1, 24) series in three classes whose names share words."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, 24)
    k = np.arange(n) % 3
    shapes = np.stack([np.sin(t), np.sign(np.sin(t)), (t % np.pi) / np.pi * 2 - 1])
    x = (shapes[k] + 0.2 * rng.normal(size=(n, 24))).astype(np.float32)
    return x[:, None], np.array(["sine wave", "square wave", "saw tooth wave"])[k]


def blobs(n=40, seed=1, channels=2):
    """(N, C, 6, 6) fields, integer codes 0/1 (dark/bright)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, channels, 6, 6)).astype(np.float32) + y[:, None, None, None] * 1.5
    return x, y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt")
    (xa, ya), (xb, yb) = waves(), blobs()
    np.savez(root / "waves.npz", x_train=xa[:36], y_train=ya[:36], x_test=xa[36:], y_test=ya[36:])
    np.savez(root / "blobs.npz", x_train=xb[:30], y_train=yb[:30], x_test=xb[30:], y_test=yb[30:])
    (root / "codes.yaml").write_text("0: dark\n1: bright\n")
    return root


@pytest.fixture(scope="module")
def fitted(tiny_bodies, files, tmp_path_factory):
    """Two tasks from a YAML task list: a (1, 24) series task and a (2, 6, 6) field task."""
    bert = tiny_bodies["bert"]
    (files / "tasks.yaml").write_text(
        f"tasks:\n  - data: {files / 'waves.npz'}\n"
        f"  - name: fields\n    data: {files / 'blobs.npz'}\n"
        f"    instruction: is this field dark or bright?\n    label_texts: {files / 'codes.yaml'}\n")
    out = tmp_path_factory.mktemp("mtrun") / "run"
    run = transmodal.fit(tasks=str(files / "tasks.yaml"), out=out, body=bert, text_body=bert,
                         epochs=8, head_lr=3e-3, **FAST)
    return run, out


def test_two_tasks_train_and_report_per_task_scores(fitted):
    run, out = fitted
    assert run.task_names == ["waves", "fields"]  # default name: the data file's stem
    s = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    for name in ("waves", "fields"):
        row = s["tasks"][name]
        assert set(row["val"]) == set(row["test"]) == {"accuracy", "macro_f1", "invalid_rate"}
        assert row["test"]["invalid_rate"] == 0.0  # constrained decoding: always a label
        assert f"val_{name}:accuracy" in rows[0]
    # the run's validation score is the mean of the per-task scores
    assert s["metrics"]["val"]["accuracy"] == pytest.approx(
        np.mean([s["tasks"][n]["val"]["accuracy"] for n in ("waves", "fields")]))
    assert s["tasks"]["fields"]["test"]["accuracy"] >= 0.8  # an easy task; 1.0 when written
    assert s["tasks"]["waves"]["instruction"] == "which class is this waves sample?"
    # what a task adds is its embedder only: the heads share one decoder and projection
    m = run.model
    assert m.heads["waves"].decoder is m.heads["fields"].decoder
    assert m.heads["waves"].proj is m.heads["fields"].proj
    own = sum(p.numel() for p in m.embedders["fields"].parameters())
    assert s["tasks"]["fields"]["added_params"] == own
    # each task answers within its own label set
    xb = blobs()[0][:10]
    assert set(run.predict(xb, task_name="fields")) <= {0, 1}
    assert set(run.predict(waves()[0][:10], task_name="waves")) <= {"sine wave", "square wave",
                                                                    "saw tooth wave"}


def test_instruction_comes_first_in_the_body_sequence(fitted):
    run, _ = fitted
    m, seen = run.model, {}
    ids = m.tasks["fields"]["instruction_ids"]
    hook = m.body.model.register_forward_pre_hook(  # the Hugging Face model inside the body
        lambda mod, args, kwargs: seen.update(seq=kwargs["inputs_embeds"]), with_kwargs=True)
    with torch.no_grad():
        m.eval()(torch.zeros(1, 2, 6, 6), "fields")
    hook.remove()
    words = m.body.model.get_input_embeddings()(torch.tensor(ids))
    assert seen["seq"].shape[1] == len(ids) + 9  # the instruction, then a 3 x 3 token grid
    assert torch.equal(seen["seq"][0, : len(ids)], words)


def test_a_one_task_list_builds_what_the_single_task_fit_builds(tiny_bodies, files):
    """Issue 12's diagnosis: a task list of one task trains the same parameters at the same
    rates as the single-task generate fit, and both standardise the decoder's memory
    (--head-norm batch) with statistics of their own task."""
    from transmodal.engine.optim import build_optimizer
    from transmodal.models.heads.pooled import TokenNorm

    bert, data = tiny_bodies["bert"], str(files / "waves.npz")
    opts = dict(body=bert, text_body=bert, epochs=1, baselines="none", **FAST)
    single = transmodal.fit(data, embedder="patch", **opts).model  # a task list's embedder
    multi = transmodal.fit(tasks=[{"data": data}], **opts).model

    def groups(model):
        opt = build_optimizer(model, 1e-4, 1e-3, 0.01)
        return [(g["lr"], len(g["params"]), sum(p.numel() for p in g["params"]))
                for g in opt.param_groups]

    assert groups(single) == groups(multi)
    trainable = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (single, multi)]
    assert trainable[0] == trainable[1]
    assert isinstance(single.head.norm, TokenNorm) and isinstance(multi.heads["waves"].norm, TokenNorm)
    assert multi.spec.generate["memory_norm"] == "batch"
    # each task has its own memory statistics (its embedder makes other tokens)
    two = transmodal.fit(tasks=[{"data": data}, {"data": str(files / "blobs.npz"),
                                                 "label_texts": str(files / "codes.yaml")}],
                         **opts).model
    assert two.heads["waves"].norm is not two.heads["blobs"].norm
    assert two.heads["waves"].decoder is two.heads["blobs"].decoder


def test_rocket_tokens_fit_each_task_on_its_own_training_inputs(tiny_bodies, files, tmp_path,
                                                                monkeypatch):
    from transmodal.models.embedder import Embedder

    seen = []
    fit_inputs = Embedder.fit_inputs

    def spy(self, x):
        seen.append(np.asarray(x).shape)
        fit_inputs(self, x)

    monkeypatch.setattr(Embedder, "fit_inputs", spy)
    bert = tiny_bodies["bert"]
    x2, y2 = waves(40, seed=3)
    x2 = np.concatenate([x2, -x2], axis=1)  # (40, 2, 24): another input shape
    np.savez(tmp_path / "two.npz", x_train=x2[:30], y_train=y2[:30], x_test=x2[30:], y_test=y2[30:])
    tasks = [{"data": str(files / "waves.npz")}, {"name": "two", "data": str(tmp_path / "two.npz")}]
    run = transmodal.fit(tasks=tasks, out=tmp_path / "run", embedder="rocket", body=bert,
                         text_body=bert, epochs=2, **FAST)
    rows = run.summary["tasks"]
    # one fit per task, on its own training part only (not its validation or test part)
    assert seen == [(rows["waves"]["n_train"], 1, 24), (rows["two"]["n_train"], 2, 24)]
    a, b = run.model.embedders["waves"], run.model.embedders["two"]
    assert a.kind == b.kind == "rocket" and not torch.equal(a.rocket_mean, b.rocket_mean)
    loaded = transmodal.load(tmp_path / "run")
    assert np.array_equal(loaded.predict_proba(x2, task_name="two"),
                          run.predict_proba(x2, task_name="two"))
    before = run.predict_proba(waves()[0], task_name="waves")
    x3, y3 = waves(30, seed=5)
    added = run.add_task("third", (x3[:20] * 2, y3[:20]), epochs=1)
    assert seen[-1] == (added.summary["tasks"]["third"]["n_train"], 1, 24)  # the new task's own
    assert np.array_equal(added.predict_proba(waves()[0], task_name="waves"), before)


def test_save_load_and_cli_predict_with_task_name(fitted, files, tmp_path):
    run, out = fitted
    loaded = transmodal.load(out)
    xb = np.load(files / "blobs.npz")["x_test"]
    xa = np.load(files / "waves.npz")["x_test"]
    assert np.array_equal(loaded.predict_proba(xb, task_name="fields"),
                          run.predict_proba(xb, task_name="fields"))
    assert np.array_equal(loaded.predict(xa, task_name="waves"), run.predict(xa, task_name="waves"))
    assert main(["predict", str(out), "--data", str(files / "blobs.npz"), "--task-name", "fields",
                 "--out", str(tmp_path / "p.csv")]) == 0
    import pandas as pd

    written = pd.read_csv(tmp_path / "p.csv")["prediction"].tolist()
    assert written == run.predict(xb, task_name="fields").tolist()
    assert main(["evaluate", str(out), "--data", str(files / "waves.npz"), "--task-name", "waves"]) == 0
    from safetensors import safe_open

    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        decoders = [k for k in f.keys() if k.endswith("word_embeddings.weight") and ".decoder." in k]
    assert len(decoders) == 1  # the shared decoder is stored once


def test_same_seed_same_model(fitted, tiny_bodies, files):
    run, _ = fitted
    bert = tiny_bodies["bert"]
    again = transmodal.fit(tasks=str(files / "tasks.yaml"), body=bert, text_body=bert, epochs=8,
                           head_lr=3e-3, **FAST)
    xb = blobs()[0]
    assert np.array_equal(again.predict_proba(xb, task_name="fields"),
                          run.predict_proba(xb, task_name="fields"))
    assert again.summary["metrics"] == run.summary["metrics"]


def test_add_task_trains_no_new_head_and_keeps_the_others(fitted, tmp_path):
    run, _ = fitted
    x3, y3 = blobs(24, seed=5, channels=3)  # a third input shape
    y3 = np.where(y3 == 1, "loud", "quiet")
    before = run.predict_proba(waves()[0], task_name="waves")
    heads = {id(p) for h in run.model.heads.values() for p in h.parameters()}
    new = run.add_task("noise", (x3[:18], y3[:18]), "is this loud or quiet?", epochs=3,
                       test_data=(x3[18:], y3[18:]), out=tmp_path / "added")
    assert new.task_names == ["waves", "fields", "noise"] and run.task_names == ["waves", "fields"]
    # no new head weights: the new head is a trie over the same decoder
    assert {id(p) for h in new.model.heads.values() for p in h.parameters()} == \
        {id(p) for p in new.model.heads["waves"].parameters()}
    assert len(heads) == len({id(p) for p in new.model.heads["noise"].parameters()})
    # default tune="embedder": the earlier tasks answer exactly as before
    assert np.array_equal(new.predict_proba(waves()[0], task_name="waves"), before)
    assert set(new.predict(x3, task_name="noise")) <= {"loud", "quiet"}
    assert "test" in new.summary["tasks"]["noise"]
    loaded = transmodal.load(tmp_path / "added")
    assert np.array_equal(loaded.predict_proba(x3, task_name="noise"),
                          new.predict_proba(x3, task_name="noise"))
    with pytest.raises(ConfigError, match="already has a task named 'waves'"):
        run.add_task("waves", (x3, y3))


def test_cli_fit_with_repeated_data_and_add_task(tiny_bodies, files, tmp_path):
    bert = tiny_bodies["bert"]
    common = ["--body", bert, "--text-body", bert, "--epochs", "1", "--batch-size", "8",
              "--max-tokens", "16", "--quiet"]
    assert main(["fit", "--data", str(files / "waves.npz"), "--data", str(files / "blobs.npz"),
                 "--head", "generate", *common, "--out", str(tmp_path / "run")]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(s["tasks"]) == ["waves", "blobs"]
    assert main(["fit", "--resume", str(tmp_path / "run")]) == 2  # refused: one line
    x3, y3 = blobs(20, seed=3, channels=1)
    np.savez(tmp_path / "third.npz", x=x3, y=y3)
    assert main(["fit", "--from", str(tmp_path / "run"), "--data", str(tmp_path / "third.npz"),
                 "--label-texts", str(files / "codes.yaml"), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "added")]) == 0
    loaded = transmodal.load(tmp_path / "added")
    assert loaded.task_names == ["waves", "blobs", "third"]
    assert loaded.model.tasks["third"]["generate"]["labels"] == ["dark", "bright"]


# ----------------------------------------------------------------------------- bad input


def test_unknown_or_missing_task_name(fitted, files, tmp_path, capsys):
    run, out = fitted
    xb = blobs()[0]
    with pytest.raises(ConfigError, match="knows no task 'nope'"):
        run.predict(xb, task_name="nope")
    with pytest.raises(ConfigError, match="serves several tasks"):
        run.predict(xb)
    for extra in (["--task-name", "nope"], []):
        capsys.readouterr()
        assert main(["predict", str(out), "--data", str(files / "blobs.npz"), *extra,
                     "--out", str(tmp_path / "p.csv")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")


def test_single_task_commands_on_a_multi_task_run(fitted, files, capsys):
    run, out = fitted
    with pytest.raises(ConfigError, match="zero_shot is not available for a run fitted on several"):
        run.zero_shot(blobs()[0], ["dark", "bright"])
    for argv in (["report", str(out)],
                 ["zeroshot", str(out), "--data", str(files / "blobs.npz"), "--labels", "a,b"]):
        capsys.readouterr()
        assert main(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_task_name_on_a_single_task_run(tiny_bodies, files, tmp_path):
    bert = tiny_bodies["bert"]
    transmodal.fit(str(files / "blobs.npz"), out=tmp_path / "one", body=bert, epochs=1,
                   batch_size=8, max_tokens=16, progress=False, baselines="none")
    assert main(["predict", str(tmp_path / "one"), "--data", str(files / "blobs.npz"),
                 "--task-name", "blobs", "--out", str(tmp_path / "p.csv")]) == 2


@pytest.mark.parametrize("case", ["same name", "linear head", "regression", "task type",
                                  "rocket on fields", "long instruction"])
def test_bad_task_lists(case, tiny_bodies, files, tmp_path, capsys):
    bert = tiny_bodies["bert"]
    a, b = str(files / "waves.npz"), str(files / "blobs.npz")
    tasks = [{"data": a}, {"data": b}]
    opts = dict(FAST, body=bert, text_body=bert, epochs=1)
    flags = ["--head", "generate"]
    if case == "same name":
        tasks = [{"name": "x", "data": a}, {"name": "x", "data": b}]
        error, match = ConfigError, "two tasks are named 'x'"
    elif case == "linear head":
        opts["head"], flags = "linear", []
        error, match = ConfigError, "need --head generate"
    elif case == "regression":
        x, _ = waves(30)
        np.savez(tmp_path / "reg.npz", x=x, y=np.linspace(0, 1, 30).astype(np.float32))
        tasks = [{"data": a}, {"data": str(tmp_path / "reg.npz")}]
        error, match = DataError, "make a regression task"
    elif case == "task type":
        opts["task"], flags = "regression", ["--head", "generate", "--task", "regression"]
        error, match = ConfigError, "are classification tasks"
    elif case == "rocket on fields":  # blobs are (2, 6, 6) fields: rocket reads series
        opts["embedder"], flags = "rocket", ["--head", "generate", "--embedder", "rocket"]
        error, match = ConfigError, "--embedder rocket is for series"
    else:  # 9 input tokens + 60 words > the tiny body's 64 positions
        tasks = [{"data": a}, {"data": b, "instruction": " ".join(["word"] * 60)}]
        error, match = DataError, "the body takes at most 64"
    with pytest.raises(error, match=match):
        transmodal.fit(tasks=tasks, out=tmp_path / "api", **opts)
    assert not (tmp_path / "api").exists()  # nothing half-written
    import yaml

    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    capsys.readouterr()
    code = main(["fit", "--tasks", str(tmp_path / "tasks.yaml"), *flags, "--body", bert,
                 "--text-body", bert, "--epochs", "1", "--max-tokens", "16", "--quiet",
                 "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match.split("'")[0] in err[0]
    assert not (tmp_path / "cli").exists()


def test_bench_multitask_prints_its_table(tiny_bodies, files, tmp_path, capsys):
    bert = tiny_bodies["bert"]
    assert main(["bench", "multitask", "--sets", f"{files / 'waves.npz'},{files / 'blobs.npz'}",
                 "--epochs", "1", "--body", bert, "--text-body", bert, "--batch-size", "8",
                 "--max-tokens", "16", "--out", str(tmp_path / "bench")]) == 0
    text = capsys.readouterr().out
    assert "| waves |" in text and "| blobs |" in text and "all: wall time" in text
    result = json.loads((tmp_path / "bench" / "results.json").read_text())
    for row in result["rows"]:
        assert 0 <= row["free_invalid"] <= 1 and row["multi_invalid"] == 0.0
        assert row["multi_added_params"] < row["linear_params"]
