"""--folds, --ensemble and --method auto (issue 16): several models in one run, and rivals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transmodal
from transmodal.errors import ConfigError, DataError
from transmodal.run.members import Member, fold_splits, nested_out_of_fold, plan_members
from transmodal.run.rival import Rival, choose_blend, describe_choice, fit_temperature, out_of_fold
from transmodal.tasks import get_task


def _tiny(tiny_bodies, **kw):
    return {**dict(body=str(tiny_bodies["bert"]), epochs=2, batch_size=8, max_tokens=8,
                   progress=False, baselines="none"), **kw}


def _split_data(toy_series):
    x, y = toy_series
    return (x[:30], y[:30]), (x[30:], y[30:])


def test_folds_cover_every_sample_once_and_never_the_test(toy_series):
    x, y = toy_series
    task = get_task("classification").fit_targets(x[:, None], y)
    folds = fold_splits(y, task, 4, seed=3)
    val = np.concatenate([va for _, va in folds])
    assert sorted(val.tolist()) == list(range(len(y)))  # each sample validated exactly once
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert set(np.bincount(y[va])) == {5}  # stratified: 5 of each class per fold
    assert [v.tolist() for _, v in fold_splits(y, task, 4, seed=3)] == [v.tolist() for _, v in folds]


def test_plan_members_seeds_and_folds(toy_series):
    x, y = toy_series
    task = get_task("classification").fit_targets(x[:, None], y)
    cfg = transmodal.FitConfig(folds=3, ensemble=2, seed=5)
    members = plan_members(y, task, cfg)
    assert [(m.seed, m.fold) for m in members] == [(5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (6, 2)]
    assert members[0].val.tolist() == members[3].val.tolist()  # same folds for every seed


def test_folds_refused_when_a_class_is_too_small(toy_series):
    x, y = toy_series
    task = get_task("classification").fit_targets(x[:, None], y)
    y_small = y.copy()
    y_small[:] = 0
    y_small[:3] = 1
    with pytest.raises(DataError, match="class 1 has only 3"):
        fold_splits(y_small, task, 5, 0)


@pytest.mark.parametrize("opts, msg", [
    ({"folds": 1}, "give 2 or more folds"),
    ({"folds": -2}, "give 2 or more folds"),
    ({"ensemble": 0}, "at least 1"),
    ({"method": "best"}, "unknown --method"),
    ({"folds": 3, "fold_epoch": "best"}, "unknown --fold-epoch"),
    ({"folds": 3, "refit": True, "fold_epoch": "own"}, "--refit trains for the epochs that the "
                                                       "folds chose together"),
    ({"refit": True, "fold_epoch": "common"}, "add --folds K"),
    ({"folds": 3, "objective": "contrastive"}, "apply to --objective supervised"),
    ({"ensemble": 2, "head": "generate"}, "--head generate is not supported with them yet"),
])
def test_bad_member_options(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        transmodal.FitConfig(**opts)


def test_auto_resolves_its_folds():
    assert transmodal.FitConfig(method="auto").folds == 5
    assert transmodal.FitConfig(method="auto", folds=3).folds == 3


def test_mix_averages_probabilities_not_logits():
    task = get_task("classification")
    a = np.array([[10.0, 0.0]], dtype=np.float32)  # p ~ (1, 0)
    b = np.array([[0.0, 0.0]], dtype=np.float32)  # p = (0.5, 0.5)
    p = task.probabilities(task.mix([a, b], [0.5, 0.5]))
    assert np.allclose(p, [[0.75, 0.25]], atol=1e-4)
    reg = get_task("regression")
    assert np.allclose(reg.mix([np.ones((2, 1)), np.zeros((2, 1))], [0.25, 0.75]), 0.25)


def test_ensemble_fit_save_load_predict(tiny_bodies, toy_series, tmp_path):
    (x, y), (xt, yt) = _split_data(toy_series)
    run = transmodal.fit((x, y), out=tmp_path / "run", test_data=(xt, yt), ensemble=2,
                         **_tiny(tiny_bodies))
    assert len(run.members) == 2
    s = run.summary
    assert [m["seed"] for m in s["members"]] == [0, 1]
    assert {"model", "member_0", "member_1"} <= set(s["components_test"])
    # the run's probabilities are the mean of its members'
    outs = run._member_outputs(run._inputs(xt))
    mean_p = np.mean([torch.softmax(torch.from_numpy(o), 1).numpy() for o in outs], axis=0)
    assert np.allclose(run.predict_proba(xt), mean_p, atol=1e-5)
    assert (tmp_path / "run/members/1/model.safetensors").is_file()
    loaded = transmodal.load(tmp_path / "run")
    assert len(loaded.members) == 2
    assert np.array_equal(loaded.predict(xt), run.predict(xt))
    assert np.allclose(loaded.predict_proba(xt), run.predict_proba(xt), atol=1e-6)
    assert s["metrics"]["test"]["accuracy"] == pytest.approx(float(np.mean(run.predict(xt) == yt)))
    np.save(tmp_path / "xt.npy", xt)  # inputs on disk are streamed through every member
    on_disk = np.load(tmp_path / "xt.npy", mmap_mode="r")
    assert np.allclose(loaded.predict_proba(on_disk), run.predict_proba(xt), atol=1e-6)


def test_folds_give_out_of_fold_validation_and_are_seeded(tiny_bodies, toy_series):
    (x, y), (xt, yt) = _split_data(toy_series)
    a = transmodal.fit((x, y), folds=3, **_tiny(tiny_bodies))
    b = transmodal.fit((x, y), folds=3, **_tiny(tiny_bodies))
    assert a.summary["n_train"] == 30 and len(a.members) == 3
    assert sum(m["n_val"] for m in a.summary["members"]) == 30  # every sample validated once
    assert "out-of-fold" in a.summary["validation"]
    assert a.summary["metrics"]["val"] == b.summary["metrics"]["val"]
    assert np.array_equal(a.predict_proba(xt), b.predict_proba(xt))  # seeded: same run twice
    assert "test" not in a.summary["metrics"]  # no test data given: nothing scored on it


def test_nested_out_of_fold_scores_a_fold_at_the_epoch_the_others_chose():
    y = np.arange(30) % 2
    task = get_task("classification").fit_targets(np.zeros((30, 1, 4)), y)
    folds = fold_splits(y, task, 3, 0)
    members = [Member(k, 0, tr, va, k) for k, (tr, va) in enumerate(folds)]
    right_at = [1, 3, 3]  # fold j's outputs are right at this epoch only (of 3)

    def outputs(j: int, epoch: int) -> np.ndarray:
        yv = y[folds[j][1]]
        label = yv if epoch == right_at[j] else 1 - yv
        return (4 * np.eye(2)[label] - 2).astype(np.float32)

    curves = [[outputs(j, e) for e in (1, 2, 3)] for j in range(3)]
    oof, epochs = nested_out_of_fold(task, members, curves, y, y)
    # fold 0's own best epoch (1) is never what the others choose (3; ties go later)
    assert epochs == [3, 3, 3]
    right = oof.argmax(1) == y
    assert not right[folds[0][1]].any() and right[folds[1][1]].all() and right[folds[2][1]].all()


def test_fold_runs_report_the_own_and_the_nested_epoch_scores(tiny_bodies, toy_series):
    (x, y), _ = _split_data(toy_series)
    run = transmodal.fit((x, y), folds=3, **_tiny(tiny_bodies, patience=0))
    for row in run.summary["members"]:
        assert 1 <= row["nested_epoch"] <= row["epochs_run"]
    assert set(run.summary["metrics"]) >= {"val", "val_nested"}
    assert "the other folds chose" in run.summary["validation"]


def _epoch_records(run_dir) -> list[dict]:
    """The refine stage's metrics.jsonl lines, each member's in epoch order, without timings."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in lines if r.get("stage") == "refine"]
    return sorted(rows, key=lambda r: (r["member"], r["epoch"]))


def test_common_epoch_trains_each_fold_as_alone_and_keeps_the_pooled_best(tiny_bodies, toy_series,
                                                                          tmp_path):
    """--fold-epoch common: the folds train side by side, each bit for bit as alone (same
    losses and validation scores every epoch), and all keep the epoch of the best pooled
    out-of-fold score; the kept weights give that epoch's outputs; save/load/predict."""
    (x, y), (xt, yt) = _split_data(toy_series)
    opts = dict(folds=3, test_data=(xt, yt), **_tiny(tiny_bodies, epochs=4, patience=0))
    own = transmodal.fit((x, y), out=tmp_path / "own", fold_epoch="own", **opts)
    common = transmodal.fit((x, y), out=tmp_path / "common", fold_epoch="common", **opts)
    assert _epoch_records(tmp_path / "own") == _epoch_records(tmp_path / "common")
    epoch = common.summary["common_epoch"]["0"]
    assert [m["best_epoch"] for m in common.summary["members"]] == [epoch] * 3
    assert "pooled out-of-fold" in common.summary["validation"]
    # the pooled out-of-fold accuracy per epoch, from the per-member records (n_val each)
    rows = _epoch_records(tmp_path / "common")
    n_val = {m["index"]: m["n_val"] for m in common.summary["members"]}
    pooled = [sum(r["val_accuracy"] * n_val[r["member"]] for r in rows if r["epoch"] == e) / 30
              for e in range(1, 5)]
    assert pooled[epoch - 1] == pytest.approx(max(pooled))
    assert common.summary["metrics"]["val"]["accuracy"] == pytest.approx(pooled[epoch - 1])
    with np.load(tmp_path / "common/out_of_fold.npz", allow_pickle=False) as oof:
        # re-predicted with the kept weights: the outputs of the chosen epoch
        assert (oof["model"].argmax(1) == oof["y"]).mean() == pytest.approx(pooled[epoch - 1])
    loaded = transmodal.load(tmp_path / "common")
    assert np.allclose(loaded.predict_proba(xt), common.predict_proba(xt), atol=1e-6)
    assert own.summary["metrics"]["val"]["accuracy"] >= common.summary["metrics"]["val"]["accuracy"]


def test_common_epoch_keeps_every_fold_at_the_same_epoch(tiny_bodies, toy_series):
    (x, y), _ = _split_data(toy_series)
    run = transmodal.fit((x, y), folds=3, fold_epoch="common",
                         **_tiny(tiny_bodies, epochs=6, patience=1, lr=1e-12, head_lr=1e-12))
    # (almost) no learning: the pooled score ties at every epoch; a tie is kept and resets the
    # patience (tests/test_early_stopping.py), so all folds run on and keep the last epoch
    assert [m["epochs_run"] for m in run.summary["members"]] == [6, 6, 6]
    assert [m["best_epoch"] for m in run.summary["members"]] == [6, 6, 6]
    assert run.summary["common_epoch"]["0"] == 6


@pytest.mark.parametrize("fold_epoch", ["own", "common"])
def test_out_of_fold_scores_are_weighted_by_the_sample_weights(tiny_bodies, toy_series, tmp_path,
                                                               fold_epoch):
    (x, y), _ = _split_data(toy_series)
    w = np.where(np.arange(30) < 12, 4.0, 1.0)  # the first 12 samples count 4 times
    # patch tokens: with rocket tokens the tiny model gets every toy sample right out of fold,
    # and the weights could not matter
    run = transmodal.fit((x, y), out=tmp_path / "w", folds=3, fold_epoch=fold_epoch,
                         sample_weight=w, embedder="patch", **_tiny(tiny_bodies))
    with np.load(tmp_path / "w/out_of_fold.npz", allow_pickle=False) as oof:
        right = oof["model"].argmax(1) == oof["y"]
    assert np.average(right, weights=w) != pytest.approx(right.mean())  # the weights matter here
    assert run.summary["metrics"]["val"]["accuracy"] == pytest.approx(np.average(right, weights=w))


def test_refit_trains_one_model_on_all_data_for_the_common_epochs(tiny_bodies, toy_series,
                                                                   tmp_path):
    (x, y), (xt, yt) = _split_data(toy_series)
    opts = dict(folds=3, fold_epoch="common", test_data=(xt, yt), **_tiny(tiny_bodies, epochs=3))
    folds_only = transmodal.fit((x, y), **opts)
    run = transmodal.fit((x, y), out=tmp_path / "refit", refit=True, **opts)
    epoch = run.summary["common_epoch"]["0"]
    assert epoch == folds_only.summary["common_epoch"]["0"]  # the folds trained as without --refit
    assert run.summary["metrics"]["val"] == folds_only.summary["metrics"]["val"]  # their score
    refit_row = run.summary["members"][-1]
    assert refit_row["refit"] and refit_row["n_train"] == 30 and refit_row["n_val"] == 0
    assert refit_row["epochs_run"] == epoch
    records = [json.loads(line) for line in (tmp_path / "refit/metrics.jsonl").read_text().splitlines()]
    refit_records = [r for r in records if r.get("refit") and r["stage"] == "refine"]
    assert [r["epoch"] for r in refit_records] == list(range(1, epoch + 1))
    assert not any(k.startswith("val_") for r in refit_records for k in r)  # nothing held out
    assert len(run.members) == 1  # the refitted model replaces the fold models
    assert not np.allclose(run.predict_proba(xt), folds_only.predict_proba(xt))
    loaded = transmodal.load(tmp_path / "refit")
    assert np.allclose(loaded.predict_proba(xt), run.predict_proba(xt), atol=1e-6)
    assert "refitted on all training data" in run.summary["validation"]


def test_test_split_never_reaches_selection(tiny_bodies, toy_series):
    """Shuffling the test labels changes no validation score and no member's best epoch."""
    (x, y), (xt, yt) = _split_data(toy_series)
    runs = [transmodal.fit((x, y), test_data=(xt, labels), folds=3, **_tiny(tiny_bodies))
            for labels in (yt, yt[::-1].copy())]
    assert runs[0].summary["metrics"]["val"] == runs[1].summary["metrics"]["val"]
    assert ([m["best_epoch"] for m in runs[0].summary["members"]]
            == [m["best_epoch"] for m in runs[1].summary["members"]])


def test_rival_minirocket_round_trips_without_pickle(toy_series, tmp_path):
    x, y = toy_series
    x = x[:, None, :]
    rival = Rival.fit("minirocket", x[:30], y[:30], classify=True, seed=0, temperature=2.0)
    rival.save(tmp_path / "rival")
    again = Rival.load(tmp_path / "rival")
    assert np.array_equal(again.outputs(x[30:]), rival.outputs(x[30:]))
    # our numpy ridge equals aeon + scikit-learn's own pipeline on the same features
    from transmodal.bench.baselines import MiniRocketBaseline

    ref = MiniRocketBaseline(random_state=0).fit(x[:30], y[:30], "classification")
    assert np.array_equal(rival.outputs(x[30:]).argmax(1), ref.predict(x[30:]))


def test_rival_linear_regression_outputs(toy_series):
    x, _ = toy_series
    x = x[:, None, :]
    y = x[:, 0, :5].mean(axis=1, keepdims=True).astype(np.float32)  # (N, 1), linear in x
    rival = Rival.fit("linear", x, y, classify=False, seed=0)
    assert rival.outputs(x).shape == (40, 1)
    assert np.abs(rival.outputs(x) - y).max() < 0.05


def test_temperature_and_blend_choice():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    scores = np.eye(3)[y] * 2.0 + rng.normal(0, 1.5, (200, 3))
    t = fit_temperature(scores, y)
    assert 0.4 < t < 2.0  # the Bayes posterior here is softmax(scores * 2 / 1.5**2)
    task = get_task("classification").fit_targets(np.zeros((200, 1, 4)), y)
    good = (5 * np.eye(3)[y]).astype(np.float32)  # a rival that is always right
    bad = np.zeros((200, 3), dtype=np.float32)  # a model that knows nothing
    choice = choose_blend(task, y, y, bad, {"minirocket": good})
    assert choice["rival"] == "minirocket" and choice["model_weight"] < 0.5
    assert choice["out_of_fold"]["minirocket"] == 1.0
    choice = choose_blend(task, y, y, good, {"minirocket": bad})
    assert choice["rival"] is None and choice["model_weight"] == 1.0


def test_blend_must_beat_the_incumbent_baseline_clearly():
    # the winner's curse: the best of 21 candidates on a few samples beats the baseline by luck
    y = np.arange(40) % 2
    task = get_task("classification").fit_targets(np.zeros((40, 1, 4)), y)
    mr = np.where(np.eye(2)[y] > 0, 0.5, -0.5).astype(np.float32)  # right, p = 0.73, on every sample
    lucky = mr.copy()
    lucky[0] *= 8  # far surer on one sample only: a lower mean loss, one standard error of it
    choice = choose_blend(task, y, y, lucky, {"minirocket": mr, "linear": mr})
    assert choice["best_candidate"]["rival"] is None and choice["loss_gain"] > 0
    assert choice["loss_gain"] < choice["guard_z"] * choice["loss_gain_se"]
    assert (choice["rival"], choice["model_weight"]) == ("minirocket", 0.0)  # the incumbent stays
    assert "under the 1.64 standard errors" in describe_choice(choice)
    surer = 3 * mr  # surer on every sample: a clear, consistent gain
    choice = choose_blend(task, y, y, surer, {"minirocket": mr, "linear": mr})
    assert choice["rival"] is None and choice["model_weight"] == 1.0
    assert "the transformer alone" in describe_choice(choice)


def test_out_of_fold_rival_never_sees_its_fold(toy_series):
    x, y = toy_series
    x = x[:, None, :]
    task = get_task("classification").fit_targets(x, y)
    folds = fold_splits(y, task, 4, 0)
    oof, _ = out_of_fold("linear", x, y, True, folds, 0)
    tr, va = folds[0]
    direct = Rival.fit("linear", x[tr], y[tr], True, 0).decision(x[va])
    assert np.allclose(oof[va].argmax(1), direct.argmax(1))


def test_auto_method_fit_save_load(tiny_bodies, toy_series, tmp_path):
    (x, y), (xt, yt) = _split_data(toy_series)
    run = transmodal.fit((x, y), out=tmp_path / "auto", test_data=(xt, yt), method="auto",
                         folds=3, **_tiny(tiny_bodies))
    auto = run.summary["auto"]
    assert set(auto["out_of_fold"]) == {"model", "minirocket", "linear"}
    assert any("--method auto chose" in n for n in run.summary["notes"])
    loaded = transmodal.load(tmp_path / "auto")
    assert (loaded.rival is None) == (auto["rival"] is None)
    assert np.allclose(loaded.predict_proba(xt), run.predict_proba(xt), atol=1e-6)
    np.save(tmp_path / "xt.npy", xt)
    on_disk = np.load(tmp_path / "xt.npy", mmap_mode="r")
    assert np.allclose(loaded.predict_proba(on_disk), run.predict_proba(xt), atol=1e-6)
    files = {p.name for p in (tmp_path / "auto").rglob("*")}
    assert not {f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))}
    plan = json.loads((tmp_path / "auto/ensemble.json").read_text())
    assert plan["model_weight"] == pytest.approx(run.model_weight)
    with np.load(tmp_path / "auto/out_of_fold.npz", allow_pickle=False) as oof:
        assert set(oof.files) == {"y", "model", "model_nested", "minirocket", "linear"}
        assert len(oof["y"]) == len(y)
        for name, score in auto["out_of_fold"].items():  # the stored outputs are what was compared
            assert (oof[name].argmax(1) == oof["y"]).mean() == pytest.approx(score)


def test_auto_method_on_values(tiny_bodies, toy_series, tmp_path):
    # regression: the same guard on squared errors; the values' out-of-fold outputs are stored
    (x, _), (xt, _) = _split_data(toy_series)
    y, yt = x[:, :8].mean(1), xt[:, :8].mean(1)  # a value each series determines
    run = transmodal.fit((x, y), out=tmp_path / "reg", test_data=(xt, yt), method="auto", folds=3,
                         task="regression", **_tiny(tiny_bodies))
    auto = run.summary["auto"]
    assert auto["incumbent"] == "minirocket" and auto["metric"] in auto
    assert set(auto["out_of_fold_loss"]) == {"model", "minirocket", "linear"}
    with np.load(tmp_path / "reg/out_of_fold.npz", allow_pickle=False) as oof:
        assert oof["model"].shape == oof["linear"].shape == (30, 1)
    loaded = transmodal.load(tmp_path / "reg")
    assert np.allclose(loaded.predict(xt), run.predict(xt), atol=1e-5)


def test_folds_on_a_dense_target(tiny_bodies, toy_series):
    (x, _), _ = _split_data(toy_series)
    y = np.tanh(x)  # one value per time step
    run = transmodal.fit((x, y), folds=2, task="dense", **_tiny(tiny_bodies))
    assert len(run.members) == 2 and "out-of-fold" in run.summary["validation"]
    assert run.predict(x[:3]).shape == (3, 48)


def test_resume_of_a_member_run_is_refused(tiny_bodies, toy_series, tmp_path):
    (x, y), _ = _split_data(toy_series)
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text(f"folds: 3\nbody: {tiny_bodies['bert']}\ndata: arrays\n")
    with pytest.raises(Exception, match="resume|checkpoint"):
        transmodal.fit((x, y), resume=out, progress=False)


@pytest.mark.parametrize("opts", [dict(folds=3, fold_epoch="own"), dict(folds=3, fold_epoch="common"),
                                  dict(folds=0)])
def test_trained_models_leave_no_optimizer_behind(tiny_bodies, toy_series, opts):
    """accelerate keeps every prepared optimizer and loader until free_memory(): with --folds K
    the finished members' AdamW states stayed in memory (measured: --folds 5 --fold-epoch own,
    ItalyPowerDemand, peak RSS 2190 -> 1532 MB once released)."""
    (x, y), _ = _split_data(toy_series)
    run = transmodal.fit((x, y), **opts, **_tiny(tiny_bodies))
    acc = run._accelerator
    assert acc._optimizers == [] and acc._models == [] and acc._dataloaders == []
    assert np.isfinite(run.predict_proba(x[:4])).all()  # the accelerator still predicts


def test_bench_defaults_rows_give_each_models_kept_and_last_epoch(tiny_bodies, toy_series):
    from transmodal.bench.defaults import row_from_summary

    train, test = _split_data(toy_series)
    single = transmodal.fit(train, test_data=test, **_tiny(tiny_bodies, epochs=3))
    row = row_from_summary("toy", 0, single.summary, 1.5)
    assert row["test"] == single.summary["metrics"]["test"]["accuracy"]
    assert row["model_alone"] == row["test"] and row["minirocket"] is None  # baselines off
    assert (row["best_epochs"], row["epochs_run"]) == ([single.summary["best_epoch"]], [3])
    folds = transmodal.fit(train, test_data=test, folds=2, **_tiny(tiny_bodies, epochs=3))
    row = row_from_summary("toy", 0, folds.summary, 1.5)
    assert row["epochs_run"] == [3, 3]
    assert row["best_epochs"] == [m["best_epoch"] for m in folds.summary["members"]]
