"""--method auto's selection rules, compared offline on stored out-of-fold and test outputs.

usage: PYTHONPATH=src python bench_results/auto_rule/study.py bench_results/auto_rule/outputs/*.npz

Each .npz (written by extract.py from a finished `--method auto` run folder) holds the encoded
training targets, the out-of-fold raw outputs of the transformer (5 fold models), MiniRocket and
the linear baseline, and their test outputs (the fold models averaged; each baseline refitted on
all training data). A rule sees only the training targets and the out-of-fold outputs; the test
outputs score what it chose. `guarded` is the code's rule (transmodal.run.rival.choose_blend);
`best of 21 by accuracy` is the rule before it; the others are its sensitivity to the margin.
"""
import sys
from pathlib import Path

import numpy as np

from transmodal.run import rival as rv
from transmodal.tasks import get_task


def acc(raw, y):
    return float((raw.argmax(1) == y).mean())


def before(task, d, names):
    """The earlier rule: the best out-of-fold accuracy of 21 candidates (ties: loss, weight)."""
    y = d["y_train"]
    cands = [(None, 1.0, d["model_oof"])] + [
        (n, s / 10, task.mix([d["model_oof"], d[f"{n}_oof"]], [s / 10, 1 - s / 10]))
        for n in names for s in range(10)]
    best = max(cands, key=lambda c: (acc(c[2], y), -rv.sample_losses(task, c[2], y).mean(), c[1]))
    return best[0], best[1]


def guarded(z):
    def rule(task, d, names):
        old, rv.GUARD_Z = rv.GUARD_Z, z
        try:
            c = rv.choose_blend(task, d["y_train"], d["y_train"], d["model_oof"],
                                {n: d[f"{n}_oof"] for n in names})
        finally:
            rv.GUARD_Z = old
        return c["rival"], c["model_weight"]
    return rule


RULES = {"before": before, "guarded (code)": guarded(rv.GUARD_Z), "z=0": guarded(0.0),
         "z=1": guarded(1.0), "z=2.33": guarded(2.33)}


def main(paths):
    rows, gaps = [], {k: [] for k in RULES}
    per_set: dict[str, dict[str, list[float]]] = {}  # today's head only: set -> column -> seeds
    for path in sorted(Path(p) for p in paths):
        d = dict(np.load(path))
        names = [n for n in rv.RIVALS if f"{n}_oof" in d]
        y = d["y_train"]
        task = get_task("classification").fit_targets(np.zeros((len(y), 1, 1)), y)
        mr = acc(d["minirocket_test"], d["y_test"])
        if not path.stem.startswith("old-head_"):
            by = per_set.setdefault(path.stem.split("-seed")[0], {})
            by.setdefault("transformer alone", []).append(acc(d["model_test"], d["y_test"]))
            by.setdefault("MiniRocket", []).append(mr)
        cells = []
        for k, rule in RULES.items():
            r, w = rule(task, d, names)
            raw = d["model_test"] if r is None else task.mix([d["model_test"], d[f"{r}_test"]], [w, 1 - w])
            a = acc(raw, d["y_test"])
            gaps[k].append(a - mr)
            if not Path(path).stem.startswith("old-head_"):
                per_set.setdefault(Path(path).stem.split("-seed")[0], {}).setdefault(k, []).append(a)
            cells.append(f"{a:.3f} ({'transformer' if r is None else f'{w:.1f}/{r}'})")
        rows.append(f"| {Path(path).stem} | {acc(d['model_test'], d['y_test']):.3f} | {mr:.3f} | " + " | ".join(cells) + " |")
    print("| run | transformer alone | MiniRocket | " + " | ".join(RULES) + " |")
    print("|---" * (3 + len(RULES)) + "|")
    print("\n".join(rows))
    print("| mean gap to MiniRocket | | | " + " | ".join(f"{np.mean(v):+.4f}" for v in gaps.values()) + " |")
    print("| worst gap to MiniRocket | | | " + " | ".join(f"{np.min(v):+.4f}" for v in gaps.values()) + " |")
    print()
    cols = ["transformer alone", "MiniRocket", "before", "guarded (code)"]
    print("| set | seeds | " + " | ".join(cols) + " |")
    print("|---" * (2 + len(cols)) + "|")
    means = {c: [] for c in cols}
    for name, by in sorted(per_set.items()):
        cells = []
        for c in cols:
            v = np.array(by[c])
            means[c].append(v.mean())
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        print(f"| {name} | {len(by[cols[0]])} | " + " | ".join(cells) + " |")
    print(f"| mean of {len(per_set)} sets | | " + " | ".join(f"{np.mean(v):.3f}" for v in means.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
