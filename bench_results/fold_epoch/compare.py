"""--fold-epoch own vs common on the same sets and seeds, from stored outputs (extract.py).

usage: PYTHONPATH=src python bench_results/fold_epoch/compare.py \
           bench_results/auto_rule/outputs bench_results/fold_epoch/outputs

Each directory holds SET-seedS.npz files written by bench_results/auto_rule/extract.py from a
finished `--method auto` run folder: the own-epoch runs (the default until now) and the
`--fold-epoch common` runs of the same set and seed. Per run: the 5-fold ensemble's test
accuracy, its out-of-fold accuracy and their difference (the out-of-fold score's optimism),
and what --method auto's guarded rule (the code's, rival.choose_blend) keeps, scored on test.
Nothing here is chosen on the test split; the test outputs only score what was chosen.
"""
import sys
from pathlib import Path

import numpy as np

from transmodal.run import rival as rv
from transmodal.tasks import get_task


def acc(raw, y):
    return float((raw.argmax(1) == y).mean())


def scores(d):
    """(transformer test, transformer out-of-fold, auto's test, auto's choice) of one run."""
    y = d["y_train"]
    task = get_task("classification").fit_targets(np.zeros((len(y), 1, 1)), y)
    names = [n for n in rv.RIVALS if f"{n}_oof" in d]
    c = rv.choose_blend(task, y, y, d["model_oof"], {n: d[f"{n}_oof"] for n in names})
    r, w = c["rival"], c["model_weight"]
    raw = d["model_test"] if r is None else task.mix([d["model_test"], d[f"{r}_test"]], [w, 1 - w])
    chosen = "transformer" if r is None else ("minirocket" if w == 0 else f"{w:.1f} blend")
    return acc(d["model_test"], d["y_test"]), acc(d["model_oof"], y), acc(raw, d["y_test"]), chosen


def main(own_dir, common_dir):
    rows, cols = [], {k: [] for k in ("t_own", "t_common", "opt_own", "opt_common", "a_own", "a_common")}
    for path in sorted(Path(common_dir).glob("*.npz")):
        own_path = Path(own_dir) / path.name
        if not own_path.is_file():
            continue
        t_o, oof_o, a_o, c_o = scores(dict(np.load(own_path)))
        t_c, oof_c, a_c, c_c = scores(dict(np.load(path)))
        for k, v in zip(cols, (t_o, t_c, oof_o - t_o, oof_c - t_c, a_o, a_c)):
            cols[k].append(v)
        rows.append(f"| {path.stem} | {t_o:.3f} | {t_c:.3f} | {oof_o:.3f} ({oof_o - t_o:+.3f}) | "
                    f"{oof_c:.3f} ({oof_c - t_c:+.3f}) | {a_o:.3f} ({c_o}) | {a_c:.3f} ({c_c}) |")
    print("| run | transformer alone, own | transformer alone, common | out-of-fold (minus test), own "
          "| out-of-fold (minus test), common | auto, own | auto, common |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    m = {k: np.mean(v) for k, v in cols.items()}
    print(f"| mean of {len(rows)} | {m['t_own']:.3f} | {m['t_common']:.3f} | ({m['opt_own']:+.3f}) | "
          f"({m['opt_common']:+.3f}) | {m['a_own']:.3f} | {m['a_common']:.3f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
