import json

import numpy as np
import pytest

import transmodal
from transmodal.cli import main
from transmodal.config import FitConfig
from transmodal.errors import ConfigError, DataError

FAST = dict(epochs=4, batch_size=8, progress=False, max_tokens=16)


def test_end_to_end_run_folder_and_reload(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    labels = np.where(y == 0, "sine", "square")
    data = {"x_train": x[:30], "y_train": labels[:30], "x_test": x[30:], "y_test": labels[30:]}
    run = transmodal.fit(data, out=tmp_path / "run", body=tiny_bodies["bert"], head_lr=3e-3, **FAST)
    folder = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model/model.safetensors",
                 "model/model.json", "report/learning_curves.png"):
        assert (folder / name).exists(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["task"] == "classification"
    assert set(summary["metrics"]["test"]) == {"accuracy", "macro_f1"}
    assert set(summary["times"]) >= {"align", "refine", "total"}
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    # the test split never appears in the per-epoch log: epochs are chosen on validation only
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == summary["epochs_run"] and not any("test" in k for r in records for k in r)
    # best validation accuracy; a tie goes to the later epoch
    assert summary["best_epoch"] == max(records, key=lambda r: (r["val_accuracy"], r["epoch"]))["epoch"]
    # reload: identical predictions, labels in the user's label space
    again = transmodal.load(folder)
    np.testing.assert_array_equal(again.predict(x[30:]), run.predict(x[30:]))
    assert set(again.predict(x[30:])) <= {"sine", "square"}
    np.testing.assert_allclose(again.predict_proba(x[30:]).sum(1), 1.0, rtol=1e-5)
    assert run.evaluate(x[30:], labels[30:])["accuracy"] == summary["metrics"]["test"]["accuracy"]


def test_learns_separable_task(tiny_bodies, toy_series):
    x, y = toy_series
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], epochs=15, batch_size=8, head_lr=3e-3,
                         progress=False, max_tokens=16)
    assert run.evaluate(x, y)["accuracy"] >= 0.9  # chance is 0.5


def test_regression_and_dense_tasks(tiny_bodies):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 32)).astype(np.float32)
    y = np.stack([x[:, 0].mean(1), x[:, 0].std(1)], 1) * 10 + 50
    run = transmodal.fit((x, y), body=tiny_bodies["bert"], **FAST)
    assert run.task == "regression" and run.predict(x).shape == (24, 2)
    assert set(run.summary["metrics"]["val"]) == {"rmse", "r2"}
    dense_y = np.cumsum(x[:, 0], axis=1)  # (N, L): a per-time-step target
    run = transmodal.fit((x, dense_y), body=tiny_bodies["vit"], **FAST)
    assert run.task == "dense" and run.predict(x).shape == (24, 32)
    assert "rel_l2" in run.summary["metrics"]["val"]


def test_learning_rates_default_to_the_tasks_and_options_win(tiny_bodies, tmp_path):
    """Dense tasks train at 10x the learning rates of the others unless --lr / --head-lr say
    otherwise; config.yaml records the rates used (a resume and the report read them)."""
    import yaml

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 32)).astype(np.float32)
    dense_y = np.cumsum(x[:, 0], axis=1)
    runs = {"dense": ((x, dense_y), {}), "class": ((x, np.arange(24) % 2), {}),
            "dense_lr": ((x, dense_y), {"lr": 5e-4})}
    for name, (data, opts) in runs.items():
        transmodal.fit(data, body=tiny_bodies["bert"], out=tmp_path / name, **{**FAST, "epochs": 1}, **opts)
    rates = {n: yaml.safe_load((tmp_path / n / "config.yaml").read_text()) for n in runs}
    assert all(rates[n]["max_tokens"] == 16 for n in runs)  # an explicit cap wins
    assert (rates["dense"]["lr"], rates["dense"]["head_lr"]) == (1e-3, 1e-2)
    assert (rates["class"]["lr"], rates["class"]["head_lr"]) == (1e-4, 1e-3)
    assert (rates["dense_lr"]["lr"], rates["dense_lr"]["head_lr"]) == (5e-4, 1e-2)
    first = {n: json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[0])
             for n in ("dense", "class")}  # the rates the optimizer got: same schedule, 10x
    assert first["dense"]["lr"] == pytest.approx(10 * first["class"]["lr"])
    assert first["dense"]["head_lr"] == pytest.approx(10 * first["class"]["head_lr"])


def test_token_cap_defaults_to_the_tasks_and_dense_tokens_hold_4_points(tiny_bodies, tmp_path):
    """--max-tokens unset: 64, and for dense tasks at most one token per 4 grid points (a
    2-point token underfits; README), recorded in config.yaml and used by the embedder."""
    import yaml

    from transmodal.tasks import get_task

    dense, classify = get_task("dense"), get_task("classification")
    assert dense.with_defaults(FitConfig(), (128,)).max_tokens == 32
    assert dense.with_defaults(FitConfig(), (1000,)).max_tokens == 64  # never above 64
    assert dense.with_defaults(FitConfig(), (32, 32)).max_tokens == 64  # 16 points per token
    assert dense.with_defaults(FitConfig(), (3,)).max_tokens == 1
    assert dense.with_defaults(FitConfig(max_tokens=48), (128,)).max_tokens == 48
    assert classify.with_defaults(FitConfig(), (128,)).max_tokens == 64
    x = np.random.default_rng(0).normal(size=(24, 1, 32)).astype(np.float32)
    fast = {k: v for k, v in FAST.items() if k != "max_tokens"}
    run = transmodal.fit((x, np.cumsum(x[:, 0], axis=1)), body=tiny_bodies["bert"], out=tmp_path / "r",
                         **{**fast, "epochs": 1})
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["max_tokens"] == 8
    assert run.model.embedder.patch == (4,) and run.summary["max_tokens"] == 8


def test_dense_rel_l2_loss_is_the_score_in_the_targets_units():
    """--dense-loss rel_l2 on standardised outputs equals the dense score (rel_l2) of the
    decoded predictions, per batch and with sample weights (mean 1)."""
    import torch

    from transmodal.tasks import get_task, rel_l2

    rng = np.random.default_rng(0)
    y = (rng.normal(size=(6, 2, 8)) * np.array([3.0, 0.5])[:, None]
         + np.array([2.0, -1.0])[:, None]).astype(np.float32)
    pred = (y + rng.normal(size=y.shape) * 0.3).astype(np.float32)
    task = get_task("dense")
    task.configure(FitConfig(dense_loss="rel_l2"))
    task.fit_targets(y, y)
    out, target = torch.from_numpy(task.encode(pred)), torch.from_numpy(task.encode(y))
    assert float(task.loss(out, target)) == pytest.approx(rel_l2(pred, y), rel=1e-5)
    w = np.array([0.5, 1.5, 1.0, 2.0, 0.25, 0.75])
    assert float(task.loss(out, target, torch.from_numpy(w))) == pytest.approx(
        rel_l2(pred, y, sample_weight=w), rel=1e-5)
    task.configure(FitConfig(dense_loss="mse"))  # MSE on standardised targets
    assert float(task.loss(out, target)) == pytest.approx(float(((out - target) ** 2).mean()), rel=1e-6)
    assert FitConfig().dense_loss == "rel_l2"  # the default


def test_a_fit_with_the_rel_l2_loss_logs_it_as_the_validation_score(tiny_bodies, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 32)).astype(np.float32)
    transmodal.fit((x, np.cumsum(x[:, 0], axis=1)), body=tiny_bodies["bert"], out=tmp_path / "r",
                   **{**FAST, "epochs": 2})  # the default loss
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "val_rel_l2" in r]
    assert len(rows) == 2
    for r in rows:  # the validation loss is the validation score (float32 vs float64)
        assert r["val_loss"] == pytest.approx(r["val_rel_l2"], rel=1e-5)
    assert main(["fit", "--data", "x.npz", "--dense-loss", "l1"]) == 2  # one line, exit 2


def test_a_dense_run_written_before_the_loss_option_resumes_with_mse(tiny_bodies, tmp_path,
                                                                     monkeypatch):
    """config.yaml files written before --dense-loss existed lack the key: their runs trained on
    MSE, so a resume keeps MSE (today's default is rel_l2)."""
    import yaml

    from transmodal.run.checkpoint import Checkpointer
    from transmodal.run.fit import resume_config

    x = np.random.default_rng(0).normal(size=(24, 1, 32)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.cumsum(x[:, 0], axis=1))
    run = tmp_path / "r"
    transmodal.fit(str(tmp_path / "d.npz"), body=tiny_bodies["bert"], out=run, **{**FAST, "epochs": 1})
    (run / "summary.json").unlink()  # as if stopped after a checkpoint (only the config is read)
    monkeypatch.setattr(Checkpointer, "load", lambda self: {"stage": "refine"})
    cfg, _ = resume_config(run, None, None, None, False, {})
    assert cfg.dense_loss == "rel_l2"  # recorded: kept
    stored = yaml.safe_load((run / "config.yaml").read_text())
    del stored["dense_loss"]
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    cfg, _ = resume_config(run, None, None, None, False, {})
    assert cfg.dense_loss == "mse"


def test_images_through_2d_embedder(tiny_bodies):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 1, 10, 10)).astype(np.float32)
    y = np.array([0, 1] * 10)
    x[y == 1, :, :5] += 2.0
    run = transmodal.fit((x, y), body=tiny_bodies["swin"], **FAST)
    assert run.predict(x).shape == (20,)


def test_same_seed_same_result(tiny_bodies, toy_series):
    x, y = toy_series
    a = transmodal.fit((x, y), body=tiny_bodies["bert"], seed=3, **FAST)
    b = transmodal.fit((x, y), body=tiny_bodies["bert"], seed=3, **FAST)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def test_unbuilt_option_refused_clearly(tiny_bodies, toy_series):
    x, y = toy_series
    with pytest.raises(ConfigError, match="unknown --tune 'half'"):
        transmodal.fit((x, y), tune="half")
    with pytest.raises(ConfigError, match="unknown option\\(s\\): epochz"):
        transmodal.fit((x, y), epochz=3)


def test_bad_input_leaves_no_run_folder(tmp_path):
    x = np.zeros((6, 1, 10))
    with pytest.raises(DataError):
        transmodal.fit((x, np.array([0, 0, 0, 0, 0, 1])), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_variable_length_rule_applied_at_predict(tiny_bodies):
    rng = np.random.default_rng(0)
    series = [rng.normal(size=int(n)) + (i % 2) * 3 for i, n in enumerate(rng.integers(20, 40, 24))]
    y = np.array([0, 1] * 12)
    run = transmodal.fit((series, y), body=tiny_bodies["bert"], **FAST)
    assert run.preprocessor.variable_length and run.preprocessor.input_shape[-1] == max(map(len, series))
    assert run.predict([rng.normal(size=17), rng.normal(size=55)]).shape == (2,)


@pytest.mark.slow
def test_default_minilm_on_gunpoint(tmp_path):
    run = transmodal.fit("ucr:GunPoint", out=tmp_path / "gp", epochs=60, progress=False)
    assert run.summary["metrics"]["test"]["accuracy"] >= 0.85


def test_lr_schedules_warm_up_then_decay_or_hold():
    from transmodal.engine.optim import lr_factor

    cos, const = lr_factor(100, 0.1, "cosine"), lr_factor(100, 0.1, "constant")
    assert [cos(s) for s in (0, 9)] == pytest.approx([0.1, 1.0])  # linear warm-up, 10 steps
    assert cos(10) == pytest.approx(1.0) and cos(55) == pytest.approx(0.5) and cos(100) == 0.0
    assert [const(s) for s in (0, 10, 55, 100)] == pytest.approx([0.1, 1.0, 1.0, 1.0])


def test_a_warm_up_lasts_at_least_its_least_steps_but_never_half_the_run():
    from transmodal.engine.optim import lr_factor

    short = lr_factor(20, 0.1, "constant", 50)  # 2 steps by the fraction; half the run: 10
    assert [short(s) for s in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    long = lr_factor(1000, 0.1, "cosine", 50)  # 100 steps by the fraction: the least is moot
    assert all(long(s) == lr_factor(1000, 0.1, "cosine")(s) for s in range(0, 1000, 7))
    assert lr_factor(20, 0.0, "constant", 50)(0) == 1.0  # --warmup 0: none


def test_dense_runs_warm_up_for_at_least_50_steps_unless_warmup_is_given(tiny_bodies, tmp_path):
    """The dense default (10x learning rates) diverged after a warm-up of a few steps; an
    explicit --warmup is kept exactly, and config.yaml keeps the default unresolved."""
    import yaml

    from transmodal.engine.optim import lr_factor

    x = np.random.default_rng(0).normal(size=(30, 1, 32)).astype(np.float32)
    y = np.cumsum(x[:, 0], axis=1) + 5.0
    lrs = {}
    for warmup in (None, 0.1):
        out = tmp_path / str(warmup)
        transmodal.fit((x, y), body=tiny_bodies["bert"], out=out, warmup=warmup, baselines="none",
                       **{**FAST, "epochs": 6})  # 24 training samples, batch 8: 18 steps
        lrs[warmup] = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").open()
                       if json.loads(line).get("stage") == "refine"]
        assert yaml.safe_load((out / "config.yaml").read_text())["warmup"] == warmup
    base = 1e-3  # dense tasks' body learning rate
    # the rate logged after epoch e was set for step 3e; 18 steps: 2 by the fraction, 9 at least
    assert lrs[None] == pytest.approx([base * lr_factor(18, 0.1, "cosine", 50)(3 * e) for e in range(1, 7)])
    assert lrs[0.1] == pytest.approx([base * lr_factor(18, 0.1, "cosine")(3 * e) for e in range(1, 7)])
    assert lrs[None][0] < lrs[0.1][0]


def test_the_task_chooses_the_batch_size_unless_one_is_given(tiny_bodies, tmp_path):
    import yaml

    from transmodal.tasks import get_task

    assert get_task("classification").with_defaults(FitConfig()).batch_size == 16
    assert get_task("regression").with_defaults(FitConfig()).batch_size == 16
    assert get_task("dense").with_defaults(FitConfig()).batch_size == 8
    assert get_task("dense").with_defaults(FitConfig(batch_size=32)).batch_size == 32
    x = np.random.default_rng(0).normal(size=(20, 1, 16)).astype(np.float32)
    transmodal.fit((x, np.cumsum(x[:, 0], axis=1) + 5.0), body=tiny_bodies["bert"], out=tmp_path / "d",
                   epochs=1, max_tokens=4, progress=False, baselines="none")
    assert yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())["batch_size"] == 8


def test_constant_schedule_holds_the_rate_in_a_run(tiny_bodies, toy_series, tmp_path):
    x, y = toy_series
    transmodal.fit((x, y), body=tiny_bodies["bert"], out=tmp_path / "r", schedule="constant",
                         warmup=0.0, **FAST)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "r" / "metrics.jsonl").open()
           if json.loads(line).get("stage") == "refine"]
    assert lrs == pytest.approx([1e-4] * 4)
    with pytest.raises(ConfigError, match="schedule"):
        transmodal.fit((x, y), body=tiny_bodies["bert"], schedule="linear", **FAST)


def test_val_comparison_ties_and_direction():
    from transmodal.tasks import get_task

    classification, dense = get_task("classification"), get_task("dense")
    assert classification.compare({"accuracy": 0.8, "loss": 1.0}, None) == 1
    assert classification.compare({"accuracy": 0.9, "loss": 9.0}, {"accuracy": 0.8, "loss": 0.1}) == 1
    assert classification.compare({"accuracy": 0.8, "loss": 9.0}, {"accuracy": 0.8, "loss": 0.1}) == 0
    assert classification.compare({"accuracy": 0.7}, {"accuracy": 0.8}) == -1
    assert dense.compare({"rel_l2": 0.2}, {"rel_l2": 0.3}) == 1  # lower is better
    assert dense.compare({"rel_l2": 0.4}, {"rel_l2": 0.3}) == -1
