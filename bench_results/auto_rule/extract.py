"""Rebuild an auto run's out-of-fold and test outputs of every candidate from its run folder.

usage: PYTHONPATH=src python bench_results/auto_rule/extract.py RUN_DIR OUT.npz
Out-of-fold: each fold member predicts its own held-out fold (the folds from the run's seed) at
its own best epoch (what --method auto compares); a stored RUN/out_of_fold.npz adds the nested ones;
the rivals are refitted per fold exactly as fit does (rival.out_of_fold); test outputs: the
members mixed, and each rival fitted on all training data with its OOF temperature.
"""
import sys
from pathlib import Path

import numpy as np

from transmodal.data import load_dataset
from transmodal.engine.loop import predict_outputs
from transmodal.run.members import plan_members, out_of_fold_outputs
from transmodal.run.rival import Rival, out_of_fold, rival_names
from transmodal.run.run import load

run_dir, out = Path(sys.argv[1]), sys.argv[2]
run = load(run_dir)
cfg, pre = run.config, run.preprocessor
task = pre.target
ds = load_dataset(cfg.data, cfg.test_data, cfg.label_column, cfg.id_column, cfg.text_column)
y_enc = pre.transform_y(ds.y_train)
y_te = pre.transform_y(ds.y_test)
members = plan_members(ds.y_train, task, cfg)
x_all = pre.transform_x(ds.x_train)
run._device()
outs = [predict_outputs(m, x_all[mem.val], cfg.batch_size * 2, run._accelerator)
        for m, mem in zip(run.members, members)]
oof = out_of_fold_outputs(task, members, outs, len(y_enc))  # at each fold's own best epoch
stored = run_dir / "out_of_fold.npz"  # newer runs keep them, and the nested ones
kept = dict(np.load(stored, allow_pickle=False)) if stored.is_file() else {}
if "model_nested" in kept:
    assert np.allclose(kept["model"], oof, atol=1e-5)  # the rebuild is exact
x_te = pre.transform_x(ds.x_test)
te = [predict_outputs(m, x_te, cfg.batch_size * 2, run._accelerator) for m in run.members]
arrays = {"y_train": y_enc, "y_test": y_te, "model_oof": oof,
          **({"model_nested_oof": kept["model_nested"]} if "model_nested" in kept else {}),
          "model_test": task.mix(te, [1 / len(te)] * len(te))}
folds = [(m.train, m.val) for m in members]
for name in rival_names(ds.x_train, task):
    r_oof, t = out_of_fold(name, ds.x_train, y_enc, True, folds, cfg.seed)
    arrays[f"{name}_oof"] = r_oof
    arrays[f"{name}_test"] = Rival.fit(name, ds.x_train, y_enc, True, cfg.seed, t).outputs(ds.x_test)
np.savez(out, **arrays)
acc = lambda raw, y: float((raw.argmax(1) == y).mean())
print(run_dir.name, {k: round(acc(v, arrays['y_' + ('test' if k.endswith('test') else 'train')]), 4)
                     for k, v in arrays.items() if k.endswith(('oof', 'test')) and v.ndim == 2})
print("summary:", run.summary.get("auto", {}).get("out_of_fold"), run.summary["metrics"]["test"])
