"""``transmodal search``: hyper-parameter search of ``fit`` options with Optuna.

TPE samples the space (``space.py``); each trial is one ``fit`` with the fixed options and the
sampled ones, without a run folder; its objective is the best validation score of the task's
primary metric (never a test score), and a pruner stops trials whose per-epoch validation score
falls behind (``pruning.py``, a callback in the one training loop). The study lives in a storage
(``storage.py``) that any number of worker processes, here or on other machines, share;
``workers`` starts that many local processes on it. What a search leaves (``output.py``)::

    DIR/journal.log     the study (default storage)
    DIR/trials.csv      every trial of the study: number, state, score, parameters, epochs, time
    DIR/best.yaml       the best trial's full configuration: transmodal fit --config DIR/best.yaml
    DIR/history.png     optimisation history; DIR/importances.png: parameter importances
    DIR/search.json     summary: study, storage, metric and direction, counts, best, wall time
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import FitConfig
from ..errors import ConfigError, TransmodalError
from .space import check_space, load_space, sample, trial_options
from .storage import StorageError, locator, open_storage

PRUNERS = ("hyperband", "median", "none")


@dataclass
class SearchSpec:
    """What every worker needs to run trials (picklable: it travels to worker processes)."""

    data: Any
    fixed: dict[str, Any]
    space: dict[str, Any]
    where: str  # storage locator (storage.locator)
    study: str
    metric: str
    higher: bool
    seed: int = 0
    timeout: float | None = None
    progress: bool = True
    pruner: Any = "hyperband"  # a name of PRUNERS or an optuna pruner
    max_epochs: int = 60
    threads: int | None = None  # torch threads of a worker process (None: leave as is)
    extra: dict[str, Any] = field(default_factory=dict)


def search(data: Any = None, *, trials: int, out: str | Path | None = None,
           space: str | Path | dict | None = None, storage: str | None = None,
           study: str = "transmodal", workers: int = 1, timeout: float | None = None,
           config: dict | str | Path | None = None, progress: bool = True,
           pruner: Any = "hyperband", **options: Any) -> dict[str, Any]:
    """Run ``trials`` trials (over ``workers`` local processes) and write the search folder.

    ``data`` and ``options`` are what ``fit`` takes; they are fixed in every trial (``config``:
    a YAML file or dict of fixed options, ``options`` override it). ``space``: a YAML file (or
    dict) replacing the default space. Returns the summary written to ``DIR/search.json``.
    """
    import optuna

    t_start = time.perf_counter()
    _check_counts(trials, workers, timeout)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fixed = _fixed_options(config, options)
    if data is None:
        data = fixed.get("data")
    if data is None:
        raise ConfigError("no data: pass --data (x.npz, x.csv, ucr:NAME or folder:PATH)")
    if isinstance(data, (str, Path)):
        data = fixed["data"] = str(data)
    else:
        fixed.pop("data", None)
    cfg = FitConfig.from_dict(fixed)  # the fixed options are checked once, here
    from ..engine.trackers import tracker_callbacks

    tracker_callbacks(cfg.report_to, None, {}, main_process=False)  # trials have no run folder
    task = _task(data, cfg)
    metric, higher = task.primary
    sp = (check_space(space, "search space", fixed) if isinstance(space, dict)
          else load_space(space, fixed, task.learning_rates))
    if not sp:
        raise ConfigError("nothing to search: every option of the search space is fixed by the "
                          "command line or --config; drop one, or give a --space")
    _make_pruner(pruner, cfg.epochs)  # an unknown pruner is refused before any work
    folder = Path(out) if out is not None else _default_out(data)
    where = locator(storage, folder)
    st = open_storage(where)  # a bad URL is refused before the search folder is made
    _prepare_study(optuna, st, study, metric, higher, data)
    folder.mkdir(parents=True, exist_ok=True)
    spec = SearchSpec(data=data, fixed=fixed, space=sp, where=where, study=study, metric=metric,
                      higher=higher, seed=cfg.seed, timeout=timeout, progress=progress,
                      pruner=pruner, max_epochs=cfg.epochs)
    run_workers(spec, trials, workers)
    from .output import write_outputs

    return write_outputs(optuna.load_study(study_name=study, storage=open_storage(where)), folder,
                         spec, workers=workers, trials=trials,
                         wall_s=time.perf_counter() - t_start)


def _check_counts(trials: Any, workers: Any, timeout: Any) -> None:
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {trials})")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers}): the number of local "
                          "worker processes")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds (got {timeout})")


def _fixed_options(config: Any, options: dict[str, Any]) -> dict[str, Any]:
    from ..run.fit import read_yaml_config

    if isinstance(config, (str, Path)):
        base = read_yaml_config(Path(config))
    else:
        base = dict(config or {})
    base.update({k: v for k, v in options.items() if v is not None})
    return {k.replace("-", "_"): v for k, v in base.items()}


def _task(data: Any, cfg: FitConfig) -> Any:
    """The task of the data: trials are scored on its primary metric and the default space
    centres on its learning rates. Loading the data here also reports data errors once, before
    any trial runs."""
    from ..data import load_dataset
    from ..run.fit import fit_targets_of, task_name
    from ..tasks import get_task

    ds = load_dataset(data, cfg.test_data, cfg.label_column, cfg.id_column, cfg.text_column)
    task = get_task(task_name(cfg, ds))  # the contrastive task under --objective contrastive
    task.configure(cfg)
    y_train, _ = fit_targets_of(ds, cfg, task, [], progress=False)  # captions, when given
    task.check_targets(ds.x_train, y_train)
    return task


def _default_out(data: Any) -> Path:
    name = Path(str(data).split(":", 1)[-1]).stem if isinstance(data, str) else "arrays"
    return Path("searches") / f"{name or 'search'}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare_study(optuna: Any, storage: Any, name: str, metric: str, higher: bool, data: Any) -> None:
    """Create the study, or check that an existing one searches the same thing."""
    direction = "maximize" if higher else "minimize"
    try:
        st = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                 load_if_exists=True)
    except TransmodalError:
        raise
    except Exception as e:  # e.g. a database the user may not write to
        raise StorageError(f"cannot create study {name!r} in the storage ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})") from None
    attrs = st.user_attrs
    shown = data if isinstance(data, str) else "arrays"
    if "metric" in attrs and (attrs["metric"] != metric or attrs.get("data") != shown):
        raise ConfigError(f"study {name!r} in this storage searches {attrs.get('data')} on "
                          f"{attrs['metric']}; this search is {shown} on {metric}: pass another --study")
    if st.direction.name.lower() != direction:
        raise ConfigError(f"study {name!r} in this storage wants to {st.direction.name.lower()}; "
                          f"{metric} must {direction[:-1]}e: pass another --study")
    st.set_user_attr("metric", metric)
    st.set_user_attr("data", shown)


def _make_pruner(pruner: Any, max_epochs: int) -> Any:
    import optuna

    if not isinstance(pruner, str):
        return pruner
    if pruner == "hyperband":  # DESIGN.md: Optuna's HyperbandPruner, epochs as the resource
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs),
                                              reduction_factor=3)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")


def run_workers(spec: SearchSpec, trials: int, workers: int) -> None:
    """``trials`` trials split over ``workers``: in this process for one worker, else in
    ``workers`` spawned processes sharing the storage (each with cores/workers torch threads)."""
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    if workers == 1:
        work(spec, 0, trials)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spec.threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(work, spec, i, n) for i, n in enumerate(shares) if n > 0]
        for f in futures:
            f.result()  # a worker's TransmodalError arrives here as itself


def work(spec: SearchSpec, index: int, n_trials: int) -> None:
    """One worker: ``n_trials`` trials of the study (TPE seeded per worker)."""
    import optuna

    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.seed + index, constant_liar=True)
    study = optuna.load_study(study_name=spec.study, storage=open_storage(spec.where),
                              sampler=sampler, pruner=_make_pruner(spec.pruner, spec.max_epochs))
    shown = [] if not spec.progress else [_Printer(spec.metric, index)]
    study.optimize(lambda trial: objective(trial, spec), n_trials=n_trials, timeout=spec.timeout,
                   catch=(TransmodalError,), callbacks=shown)


def objective(trial: Any, spec: SearchSpec) -> float:
    """One fit with the trial's options; its best validation score of the primary metric."""
    from ..run.fit import fit
    from .pruning import PruneOnValidation

    options = trial_options(spec.fixed, sample(trial, spec.space))
    t0 = time.perf_counter()
    try:
        cfg = FitConfig.from_dict(options)
        trial.set_user_attr("config", cfg.to_dict())
        run = fit(spec.data, config=cfg, progress=False,
                  callbacks=[PruneOnValidation(trial, spec.metric)])
    except TransmodalError as e:  # e.g. a combination FitConfig refuses: the trial fails
        trial.set_user_attr("error", str(e))
        raise
    finally:
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
    trial.set_user_attr("best_epoch", run.summary["best_epoch"])
    trial.set_user_attr("epochs_run", run.summary["epochs_run"])
    return float(run.summary["metrics"]["val"][spec.metric])


class _Printer:
    """One line per finished trial."""

    def __init__(self, metric: str, worker: int) -> None:
        self.metric, self.worker = metric, worker

    def __call__(self, study: Any, trial: Any) -> None:
        value = "" if trial.value is None else f" {self.metric} {trial.value:.4f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        print(f"trial {trial.number} (worker {self.worker}) {trial.state.name.lower()}{value} "
              f"[{params}] {trial.user_attrs.get('seconds', 0):.1f} s", flush=True)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
