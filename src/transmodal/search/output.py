"""The search folder's files: trials.csv, best.yaml, history.png, importances.png, search.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from ..run.folder import atomic_write_text
from .storage import _hide_password

ATTRS = ("best_epoch", "epochs_run", "pruned_at_epoch", "seconds", "error")


def write_outputs(study: Any, folder: Path, spec: Any, *, workers: int, trials: int,
                  wall_s: float) -> dict[str, Any]:
    import optuna

    states = optuna.trial.TrialState
    all_trials = study.get_trials(deepcopy=False)
    write_csv(all_trials, folder / "trials.csv", spec.metric)
    complete = [t for t in all_trials if t.state == states.COMPLETE]
    summary: dict[str, Any] = {
        "study": spec.study, "storage": _hide_password(spec.where), "data": study.user_attrs.get("data"),
        "metric": spec.metric, "direction": "maximize" if spec.higher else "minimize",
        "folder": str(folder),
        "objective": f"best validation {spec.metric} of the refine stage (never test)",
        "trials_this_run": trials, "workers": workers, "wall_s": round(wall_s, 2),
        "trials": {s.name.lower(): sum(t.state == s for t in all_trials) for s in states
                   if any(t.state == s for t in all_trials)},
        "space": spec.space, "fixed": {k: v for k, v in spec.fixed.items()},
    }
    if complete:
        best = study.best_trial
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params}
        config = dict(best.user_attrs["config"])
        header = (f"# transmodal search {spec.study}: best of {len(complete)} complete trial(s), "
                  f"trial {best.number}, validation {spec.metric} {best.value!r}\n"
                  f"# re-fit: transmodal fit --config {folder / 'best.yaml'} --out RUN\n")
        atomic_write_text(folder / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
        summary["best_config"] = str(folder / "best.yaml")
    summary["history"] = plot_history(all_trials, folder / "history.png", spec.metric, spec.higher)
    summary["importances"] = plot_importances(study, folder / "importances.png", len(complete))
    atomic_write_text(folder / "search.json", json.dumps(summary, indent=2, default=str))
    return summary


def write_csv(trials: list[Any], path: Path, metric: str) -> None:
    names = sorted({k for t in trials for k in t.params})
    rows = [["number", "state", metric, *names, *ATTRS]]
    for t in trials:
        rows.append([t.number, t.state.name.lower(), "" if t.value is None else repr(t.value),
                     *(t.params.get(k, "") for k in names),
                     *(t.user_attrs.get(k, "") for k in ATTRS)])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    tmp.replace(path)


def plot_history(trials: list[Any], path: Path, metric: str, higher: bool) -> str:
    """Each complete trial's score, the best so far, and pruned trials' last reported score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    done = [(t.number, t.value) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if done:
        xs, ys = zip(*done)
        ax.scatter(xs, ys, s=18, label="complete")
        best, line = None, []
        for v in ys:
            best = v if best is None or (v > best if higher else v < best) else best
            line.append(best)
        ax.step(xs, line, where="post", color="C3", label="best so far")
    if pruned:
        xs, ys = zip(*pruned)
        ax.scatter(xs, ys, s=18, marker="x", color="grey", label="pruned (last epoch reported)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("optimisation history")
    if done or pruned:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def plot_importances(study: Any, path: Path, n_complete: int) -> str:
    """fANOVA importances (Optuna's default evaluator) of the searched options; needs two
    complete trials with different values."""
    import optuna

    if n_complete < 2:
        return f"not plotted: {n_complete} complete trial(s), importances need at least 2"
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:
        return f"not plotted: {' '.join(str(e).split())[:160]}"
    if not imp:
        return "not plotted: no parameter varied across complete trials"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)), dpi=100)
    ax.barh(names, [imp[n] for n in names], color="C0")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
