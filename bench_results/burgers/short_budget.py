"""The suite's burgers budget (6 epochs, 32 tokens, batch 16, patience 0) with option variants, 3 seeds:

    PYTHONPATH=src python bench_results/burgers/short_budget.py TAG key=value ...

Session 12: with an 8-step warm-up the dense learning rates diverged (rows in short_budget.jsonl;
they ran on commit b918f44, before the dense warm-up rule and batch 8)."""
import json, sys, yaml, time
import transmodal
from transmodal.bench.suite_data import load_suite_dataset
ds = load_suite_dataset("burgers").dataset
data = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test}
tag, opts = sys.argv[1], {k: yaml.safe_load(v) for k, _, v in (a.partition("=") for a in sys.argv[2:])}
for seed in (0, 1, 2):
    t = time.perf_counter()
    run = transmodal.fit(data, progress=False, epochs=6, batch_size=16, max_tokens=32, patience=0,
                         baselines="none", seed=seed, **opts)
    row = {"tag": tag, "options": opts, "seed": seed, "test": run.summary["metrics"]["test"]["rel_l2"],
           "val": run.summary["metrics"]["val"]["rel_l2"], "s": time.perf_counter() - t}
    print(json.dumps(row), flush=True)
    with open("bench_results/burgers/short_budget.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
