"""Wall time and peak memory of --fold-epoch own vs common (same folds, same training).

usage: PYTHONPATH=src python bench_results/fold_epoch/cost.py [DATA] [EPOCHS] [REPEATS]

Alternates own and common fits in fresh processes (peak RSS is per process), 1 thread, and
prints a table of the refine stage's seconds and the process's peak RSS, median over repeats.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

data = sys.argv[1] if len(sys.argv) > 1 else "ucr:ItalyPowerDemand"
epochs = sys.argv[2] if len(sys.argv) > 2 else "6"
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
rows = {"own": [], "common": []}
for _ in range(repeats):
    for mode in rows:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "transmodal.cli", "fit", "--data", data, "--folds", "5",
                            "--fold-epoch", mode, "--epochs", epochs, "--baselines", "none", "--quiet",
                            "--out", out, "--overwrite"], env=env, check=True, capture_output=True)
            s = json.load(open(os.path.join(out, "summary.json")))
            rows[mode].append((s["times"]["refine"], s["peak_rss_mb"], s["metrics"]["val"]["accuracy"]))
print(f"{data}, 5 folds, {epochs} epochs, {repeats} repeats (median)")
print("| --fold-epoch | refine (s) | peak RSS (MB) | out-of-fold accuracy |")
print("|---|---|---|---|")
for mode, r in rows.items():
    a = np.array(r)
    print(f"| {mode} | {np.median(a[:, 0]):.1f} | {np.median(a[:, 1]):.0f} | {np.median(a[:, 2]):.3f} |")
ratio = np.median([c[0] / o[0] for o, c in zip(rows["own"], rows["common"])])
print(f"common / own refine time, median of paired ratios: {ratio:.2f}")
