"""Diagnostic (session 8, not an option yet): the head's BatchNorm statistics recomputed on the
training split (body in eval mode, one batch) before every validation, instead of the running
averages (momentum 0.1) that lag behind a body being fine-tuned on 2 batches per epoch.

usage: PYTHONPATH=src python bench_results/recipe/precise_bn.py SET pbn|default SEED
(one default fit of ucr:SET at the seed, without baselines; prints one JSON line)
"""
import sys, json, torch
import transmodal
from transmodal.engine import refine as R
from transmodal.models.heads.pooled import FeatureNorm

orig = R.RefineStage.end_epoch

def end_epoch(self, state, losses, skipped):
    model = self.unwrapped
    norms = [m for m in model.modules() if isinstance(m, FeatureNorm)]
    x = self.loader.dataset.tensors[0]
    was = model.training
    model.eval()
    for n in norms:
        n.reset_running_stats(); n.momentum = None; n.train()
    with torch.no_grad():
        model(x.to(self.accelerator.device))  # one batch: exact statistics of the training split
    for n in norms:
        n.momentum = 0.1
    model.train(was)
    return orig(self, state, losses, skipped)

if sys.argv[2] == "pbn":
    R.RefineStage.end_epoch = end_epoch
name, seed = sys.argv[1], int(sys.argv[3])
run = transmodal.fit(f"ucr:{name}", out=f"runs/precise_bn/{name}-{sys.argv[2]}-{seed}", overwrite=True, progress=False, seed=seed, baselines="none")
print(json.dumps({"set": name, "mode": sys.argv[2], "seed": seed, "test": run.summary["metrics"]["test"]["accuracy"], "val": run.summary["metrics"]["val"]["accuracy"], "best_epoch": run.summary["best_epoch"], "s": run.summary["times"]["total"]}), flush=True)
