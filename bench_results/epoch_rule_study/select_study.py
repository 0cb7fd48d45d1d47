"""Which best-epoch rule generalises on tiny validation sets? Logs test accuracy per epoch
(for this study only; never used by fit) next to val accuracy/loss, at the suite budgets."""
import json, sys
import numpy as np
import transmodal
import transmodal.run as R
from transmodal.preprocess import Preprocessor
from transmodal.train import predict_outputs
from transmodal.bench.suite import load_suite_dataset, plan_fit

captured = {}
orig_fit = Preprocessor.fit.__func__
def pre_fit(cls, *a, **k):
    captured["pre"] = orig_fit(cls, *a, **k)
    return captured["pre"]
Preprocessor.fit = classmethod(pre_fit)
orig_refine = R.refine
def refine(model, task, train, val, cfg, accelerator, log=None, **kw):
    pre, ds = captured["pre"], captured["ds"]
    x_te = pre.transform_x(ds.x_test)
    def log2(rec):
        if rec.get("stage") == "refine":
            raw = predict_outputs(model, x_te, 64, accelerator)
            rec = {**rec, "test_accuracy": float(np.mean(pre.inverse_y(raw) == ds.y_test))}
            captured["recs"].append(rec)
        if log: log(rec)
    return orig_refine(model, task, train, val, cfg, accelerator, log=log2, **kw)
R.refine = refine

sets = sys.argv[1].split(",")
method = sys.argv[2] if len(sys.argv) > 2 else "none"
for name in sets:
    d = load_suite_dataset(name)
    plan = plan_fit(d, d.budget, 512)
    for seed in (0, 1, 2):
        captured["ds"], captured["recs"] = d.dataset, []
        r = transmodal.fit(d.dataset, progress=False, tune="full", align=method, epochs=plan.epochs,
                           batch_size=plan.batch_size, max_tokens=plan.max_tokens, seed=seed, patience=0)
        print(json.dumps({"set": name, "seed": seed, "align": method, "chosen_test": r.summary["metrics"]["test"]["accuracy"],
                          "best_epoch": r.summary["best_epoch"],
                          "epochs": [{k: e[k] for k in ("epoch", "val_accuracy", "val_loss", "test_accuracy", "train_loss")} for e in captured["recs"]]}), flush=True)
