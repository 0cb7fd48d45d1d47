"""Burgers (the suite's dense set) with fit options: PYTHONPATH=src python bench_results/burgers/run.py TAG key=value ...

PDE=darcy in the environment: the 2-D dense set instead (Darcy flow on 32 x 32, PDE_SEED, default 0).

NU=0.05 PDE_SEED=1 in the environment: our own second dense set (sharper fronts, another seed);
T_FINAL=0.2 (with NU): a short horizon, where u(T) stays close to u0.
PDE=energy: a regression set from the suite's Burgers fields: u0 -> the share of energy left at
T, ||u(T)||^2 / ||u0||^2 (nonlinear: steeper fronts dissipate more); rows go to bench_results/energy.
A row per fit is appended to bench_results/burgers/results.jsonl (test and validation relative L2).
"""
import json
import os
import sys
import time

import yaml

import transmodal
from transmodal.bench.suite_data import load_suite_dataset

tag, opts = sys.argv[1], {k: yaml.safe_load(v) for k, _, v in (a.partition("=") for a in sys.argv[2:])}
pde = os.environ.get("PDE", "burgers")
if pde == "darcy":  # the 2-D dense set: Darcy flow a -> u on 32 x 32 (rows go to bench_results/darcy)
    from transmodal.data.pde import make_darcy
    ds = make_darcy(seed=int(os.environ.get("PDE_SEED", "0")))
    name = f"darcy 32x32 seed {os.environ.get('PDE_SEED', '0')} (generated)"
elif pde == "energy":  # a scalar regression target from the same fields
    ds = load_suite_dataset("burgers").dataset

    def energy_left(u0, ut):
        return (ut.reshape(len(ut), -1) ** 2).sum(1) / (u0.reshape(len(u0), -1) ** 2).sum(1)

    ds.y_train, ds.y_test = energy_left(ds.x_train, ds.y_train), energy_left(ds.x_test, ds.y_test)
    name = "suite burgers fields -> energy left at T (regression)"
elif os.environ.get("NU"):  # our own second dense set: sharper fronts, another seed
    from transmodal.data.pde import make_burgers
    ds = make_burgers(n_train=256, n_test=128, grid=128,
                      viscosity=float(os.environ["NU"]), seed=int(os.environ.get("PDE_SEED", "1")),
                      t_final=float(os.environ.get("T_FINAL", "1.0")))
    name = (f"burgers nu={os.environ['NU']} T={os.environ.get('T_FINAL', '1.0')} seed "
            f"{os.environ.get('PDE_SEED', '1')} (generated)")
else:
    ds = load_suite_dataset("burgers").dataset
    name = "suite burgers (nu=0.1)"
data = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test}
t = time.perf_counter()
run = transmodal.fit(data, out=f"runs/{pde}/{tag}", overwrite=True, progress=False, **opts)
s = run.summary
row = {"tag": tag, "data": name, "options": opts, "test": s["metrics"]["test"], "val": s["metrics"]["val"],
       "best_epoch": s.get("best_epoch"), "seconds": time.perf_counter() - t, "baselines": s.get("baselines")}
print(json.dumps(row))
os.makedirs(f"bench_results/{pde}", exist_ok=True)
with open(f"bench_results/{pde}/results.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
