"""``fit`` with a task list (OFA, issue 12 part 4): one model, many classification tasks.

Each task keeps its own data rules (preprocessing, validation split, label texts); they share
the body and the decoder (``models/multitask.py``) and train in one stage
(``engine/multitask.py``). ``MultiTaskRun`` predicts for one named task at a time
(``task_name=``, the CLI's ``--task-name``) and adds a task later with no new head
(:meth:`MultiTaskRun.add_task`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FitConfig
from ..data import Preprocessor, load_dataset, split_train_val
from ..data.stream import streamed
from ..data.task_list import resolve_task_list
from ..engine.loop import predict_outputs
from ..engine.multitask import TaskSplit, split_scores, train_multitask
from ..engine.optim import make_accelerator, step_work
from ..errors import ConfigError, DataError
from ..models import ModelSpec
from ..models.model import cpu_copy
from ..models.multitask import (MultiTaskModel, TaskView, add_task_modules, build_multitask,
                                load_multitask, save_multitask, tokenise_instruction)
from ..models.tuning import apply_tuning, count_parameters
from .folder import RunFolder
from .run import Run

VALIDATION = "mean over tasks of each task's scores (each task counts the same)"
ADD_TUNE = ("embedder", "full")


def task_arrays_out_of(options: dict[str, Any]) -> tuple[dict[str, Any], dict[int, tuple[Any, Any]]]:
    """In-memory data of API task entries stay out of the config (recorded as "arrays")."""
    tasks = options.get("tasks")
    if not isinstance(tasks, (list, tuple)):
        return options, {}
    arrays: dict[int, tuple[Any, Any]] = {}
    clean = []
    for i, entry in enumerate(tasks):
        entry = dict(entry) if isinstance(entry, dict) else entry
        if isinstance(entry, dict):
            data, test = entry.get("data"), entry.get("test_data")
            paths = (str, Path, type(None))
            if not isinstance(data, paths) or not isinstance(test, paths):
                arrays[i] = (None if isinstance(data, (str, Path)) else data,
                             None if isinstance(test, (str, Path)) else test)
                entry["data"] = str(data) if isinstance(data, (str, Path)) else "arrays"
                if test is not None:
                    entry["test_data"] = str(test) if isinstance(test, (str, Path)) else "arrays"
        clean.append(entry)
    return {**options, "tasks": clean}, arrays


def prepare_task(entry: dict[str, Any], arrays: tuple[Any, Any] | None, cfg: FitConfig
                 ) -> dict[str, Any]:
    """Load, check, split and preprocess one task's data (before any file is written)."""
    from ..tasks import get_task, infer_task

    name = entry["name"]
    data = arrays[0] if arrays and arrays[0] is not None else entry["data"]
    test = arrays[1] if arrays and arrays[1] is not None else entry["test_data"]
    ds = load_dataset(data, test, cfg.label_column)
    if ds.y_train is None:
        raise DataError(f"task {name!r}: its data have no labels; every task needs labels")
    if streamed(ds.x_train, ds.x_test):
        raise ConfigError(f"task {name!r}: data streamed from disk (.npy folders) train one task; "
                          "load them into memory for several tasks")
    kind = infer_task(ds.x_train, ds.y_train) if cfg.task == "auto" else cfg.task
    if kind != "classification":
        raise DataError(f"task {name!r}: its labels make a {kind} task; several tasks in one "
                        "model are classification tasks (integer or text labels)")
    task = get_task("classification")
    task.configure(dataclasses.replace(cfg, tasks=None, label_texts=None))
    task.generate_text["mapping"] = entry["label_texts"]
    task.check_targets(ds.x_train, ds.y_train)
    tr, va = split_train_val(ds.y_train, task, cfg.val_fraction, cfg.seed)
    pre = Preprocessor.fit(ds.x_train[tr], ds.y_train[tr], task, ds.variable_length,
                           feature_names=ds.feature_names)
    out = {"entry": entry, "task": task, "pre": pre, "n_train": len(tr), "n_val": len(va),
           "split": TaskSplit(name, task, pre.transform_x(ds.x_train[tr]),
                              pre.transform_y(ds.y_train[tr]), pre.transform_x(ds.x_train[va]),
                              pre.transform_y(ds.y_train[va]), ds.y_train[va]),
           "x_test": None, "y_test": None, "shape": list(ds.x_train.shape[1:])}
    if ds.x_test is not None:
        task.check_eval_targets(ds.x_test, ds.y_test)
        out["x_test"], out["y_test"] = pre.transform_x(ds.x_test), ds.y_test
    return out


def fit_task_inputs(model: MultiTaskModel, splits: list[TaskSplit]) -> None:
    """Each new task's embedder fits what depends on its own training inputs (``rocket``: its
    biases and its features' scale), as a single-task fit does once on a fresh model; patch
    embedders fit nothing and draw no random numbers."""
    for split in splits:
        model.embedders[split.name].fit_inputs(split.x_tr)


def task_meta(prepared: dict[str, Any], body: str) -> dict[str, Any]:
    """What the model file keeps of a task: its instruction ids, input shape and label texts."""
    from ..models.bodies.hf import resolve_body_path

    entry, shape = prepared["entry"], prepared["shape"]
    return {"name": entry["name"], "instruction": entry["instruction"],
            "instruction_ids": tokenise_instruction(resolve_body_path(body), entry["instruction"]),
            "in_channels": int(shape[0]), "spatial": [int(s) for s in shape[1:]],
            "generate": {"labels": list(prepared["task"].generate_text["texts"])}}


def fit_multitask(cfg: FitConfig, arrays: dict[int, tuple[Any, Any]], out: str | Path | None,
                  overwrite: bool, progress: bool, callbacks: Any = ()) -> "MultiTaskRun":
    """Fit one model on every task of ``cfg.tasks`` (see the module docstring)."""
    from ..tasks import get_task
    from .fit import peak_rss_mb, seed_everything, set_body_dropout

    cfg = get_task("classification").with_defaults(cfg)  # every task is a classification
    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    prepared = [prepare_task(entry, arrays.get(i), cfg) for i, entry in enumerate(cfg.tasks)]
    t_data = time.perf_counter() - t_start
    t0 = time.perf_counter()
    spec = ModelSpec(task="classification", n_outputs=0, in_channels=0, spatial=[], body=cfg.body,
                     pretrained=cfg.tune != "scratch", max_tokens=cfg.max_tokens,
                     attention_dropout=cfg.attention_dropout, embedder=cfg.embedder, head="generate",
                     head_norm=cfg.head_norm,
                     generate={"text_body": cfg.text_body, "decode": cfg.decode})
    model = build_multitask(spec, [task_meta(p, cfg.body) for p in prepared])
    fit_task_inputs(model, [p["split"] for p in prepared])
    set_body_dropout(model.body, cfg)
    apply_tuning(model, cfg.tune)
    trainable, total = count_parameters(model)
    accelerator, precision = make_accelerator(
        cfg.device, cfg.precision, step_work(model, cfg.batch_size, cfg.max_tokens))
    if accelerator.num_processes > 1:
        raise ConfigError("several tasks in one model train in one process for now; launch "
                          "without accelerate/torchrun")
    t_build = time.perf_counter() - t0
    folder = RunFolder(Path(out)) if out is not None else None
    if folder is not None:
        folder.start({**cfg.to_dict(), "task": "classification", "precision": precision},
                     overwrite=overwrite)
    t0 = time.perf_counter()
    model = accelerator.prepare(model)
    state = train_multitask(model, [p["split"] for p in prepared], cfg, accelerator,
                            log=folder.log if folder else None, progress=progress, callbacks=callbacks)
    model = accelerator.unwrap_model(model)
    t_refine = time.perf_counter() - t0
    run = MultiTaskRun(model, {p["entry"]["name"]: p["pre"] for p in prepared}, cfg, {},
                       folder.path if folder else None)
    run._accelerator = accelerator
    tasks = task_rows(run, prepared, state, accelerator, cfg)
    summary = {
        "task": "classification", "data": [t["data"] for t in cfg.tasks], "body": cfg.body,
        "align": cfg.align, "tune": cfg.tune, "tasks": tasks, "metrics": mean_metrics(tasks),
        "validation": VALIDATION, "baselines": {}, "best_epoch": state.best_epoch,
        "epochs_run": state.epoch, "trainable_params": trainable, "total_params": total,
        "n_train": sum(p["n_train"] for p in prepared), "n_val": sum(p["n_val"] for p in prepared),
        "n_test": sum(0 if p["x_test"] is None else len(p["x_test"]) for p in prepared),
        "device": str(accelerator.device), "precision": precision,
        "max_tokens": min(cfg.max_tokens, model.body.max_tokens), "peak_rss_mb": peak_rss_mb(),
        "skipped_batches": state.skipped_batches, "resumed_from": None,
        "notes": ["several tasks: no baselines are scored (they serve one task each)"],
    }
    summary["times"] = {"data": t_data, "build": t_build, "refine": t_refine,
                        "total": time.perf_counter() - t_start}
    run.summary = summary
    if folder is not None:
        run.write(folder, state)
    return run


def task_rows(run: "MultiTaskRun", prepared: list[dict[str, Any]], state: Any, accelerator: Any,
              cfg: FitConfig) -> dict[str, dict[str, Any]]:
    """Per task: its data, instruction, labels, sizes, added parameters, validation scores (the
    best epoch's) and test scores (the test split is touched here only)."""
    _, val = split_scores(state.best_val)
    rows = {}
    for p in prepared:
        name, task = p["entry"]["name"], p["task"]
        row = {"data": p["entry"]["data"], "instruction": p["entry"]["instruction"],
               "labels": list(task.generate_text["texts"]), "n_train": p["n_train"],
               "n_val": p["n_val"], "n_test": 0 if p["x_test"] is None else len(p["x_test"]),
               "added_params": run.model.added_parameters(name), "val": val.get(name, {})}
        if p["x_test"] is not None:
            raw = predict_outputs(TaskView(run.model, name), p["x_test"], cfg.batch_size * 2,
                                  accelerator)
            row["test"] = task.score_outputs(p["y_test"], raw)
        rows[name] = row
    return rows


def mean_metrics(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The run's scores: each metric's mean over the tasks that have that split."""
    out: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        rows = [t[split] for t in tasks.values() if t.get(split)]
        if rows:
            keys = [k for k in rows[0] if all(k in r for r in rows)]
            out[split] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return out


class MultiTaskRun:
    """A fitted multi-task model with one preprocessing per task; every prediction names its
    task (``task_name=``)."""

    def __init__(self, model: MultiTaskModel, preprocessors: dict[str, Preprocessor],
                 config: FitConfig, summary: dict[str, Any], path: Path | None = None) -> None:
        self.model = model
        self.preprocessors = dict(preprocessors)
        self.config = config
        self.summary = summary
        self.path = path
        self._accelerator = None
        self._runs: dict[str, Run] = {}

    @property
    def task_names(self) -> list[str]:
        return self.model.task_names

    def __getattr__(self, name: str) -> Any:
        """What a single-task ``Run`` has and this one lacks (zero-shot, merge, ...): one clear
        error instead of an AttributeError."""
        if name.startswith("_"):
            raise AttributeError(name)
        raise ConfigError(f"{name} is not available for a run fitted on several tasks; it "
                          "predicts, scores and adds tasks (task_name=NAME, --task-name NAME)")

    def task_run(self, task_name: str | None) -> Run:
        """The run of one task: a plain :class:`Run` over the shared model (its own
        preprocessing and labels), so every single-task prediction path works unchanged."""
        if task_name is None:
            raise ConfigError(f"this run serves several tasks ({', '.join(self.task_names)}); "
                              "say which with task_name=NAME (--task-name NAME)")
        self.model.check_task(task_name)
        if task_name not in self._runs:
            self._runs[task_name] = Run(TaskView(self.model, task_name), self.preprocessors[task_name],
                                        self.config, self.summary.get("tasks", {}).get(task_name, {}),
                                        self.path)
        return self._runs[task_name]

    def classes(self, task_name: str) -> list[Any]:
        return self.task_run(task_name).classes

    def predict(self, x: Any, task_name: str | None = None) -> np.ndarray:
        return self.task_run(task_name).predict(x)

    def predict_proba(self, x: Any, task_name: str | None = None) -> np.ndarray:
        return self.task_run(task_name).predict_proba(x)

    def evaluate(self, x: Any, y: Any, task_name: str | None = None) -> dict[str, float]:
        return self.task_run(task_name).evaluate(x, y)

    def save_models(self, folder: Path | None = None) -> None:
        folder = RunFolder(Path(folder) if folder is not None else self.path)
        save_multitask(self.model, folder.model_dir,
                       {"preprocessors": {k: p.to_dict() for k, p in self.preprocessors.items()},
                        "config": self.config.to_dict()})

    def write(self, folder: RunFolder, state: Any) -> None:
        """Model, learning curves and summary.json (last: it marks the run complete)."""
        from ..report import plot_learning_curves

        self.save_models(folder.path)
        plot_learning_curves(state.history, "accuracy", folder.report_dir / "learning_curves.png",
                             state.best_epoch)
        folder.write_summary(self.summary)

    def add_task(self, name: str, data: Any, instruction: str | None = None,
                 label_texts: dict[str, str] | str | None = None, *, test_data: Any = None,
                 epochs: int | None = None, tune: str = "embedder", out: str | Path | None = None,
                 overwrite: bool = False, progress: bool = False) -> "MultiTaskRun":
        """A new run that also serves task ``name``: a new embedder and label trie over the
        shared body and decoder (no new head), fine-tuned on the new task's data.

        ``tune="embedder"`` (default) trains the new embedder only, so every earlier task
        predicts exactly as before; ``"full"`` also fine-tunes the body and decoder (with
        ``config.tune``) on the new task alone, which may change the earlier tasks' answers.
        This run is left unchanged; ``out`` writes the new run folder.
        """
        from .fit import peak_rss_mb, seed_everything, set_body_dropout

        if tune not in ADD_TUNE:
            raise ConfigError(f"add_task tune={tune!r}; choose one of {', '.join(ADD_TUNE)}")
        if name in self.model.tasks:
            raise ConfigError(f"this run already has a task named {name!r}; give the new task "
                              "its own name")
        t_start = time.perf_counter()
        entry = {"name": name, "data": data, "test_data": test_data, "instruction": instruction,
                 "label_texts": label_texts}
        opts, arrays = task_arrays_out_of({"tasks": [entry]})
        new_entry = resolve_task_list(opts["tasks"])[0]
        cfg = dataclasses.replace(self.config, tasks=[*self.config.tasks, new_entry],
                                  epochs=int(epochs or self.config.epochs))
        seed_everything(cfg.seed)
        prepared = prepare_task(new_entry, arrays.get(0), cfg)
        model = cpu_copy(self.model)
        set_body_dropout(model.body, cfg)  # a loaded body has its own dropout again
        add_task_modules(model, task_meta(prepared, cfg.body))
        fit_task_inputs(model, [prepared["split"]])
        if tune == "embedder":
            model.requires_grad_(False)
            model.embedders[name].requires_grad_(True)
        else:
            apply_tuning(model, cfg.tune)
        accelerator, _ = make_accelerator(
            cfg.device, cfg.precision, step_work(model, cfg.batch_size, cfg.max_tokens))
        folder = RunFolder(Path(out)) if out is not None else None
        if folder is not None:
            folder.start({**cfg.to_dict(), "task": "classification", "added_task": name,
                          "add_tune": tune}, overwrite=overwrite)
        model = accelerator.prepare(model)
        state = train_multitask(model, [prepared["split"]], cfg, accelerator,
                                log=folder.log if folder else None, progress=progress)
        model = accelerator.unwrap_model(model)
        run = MultiTaskRun(model, {**self.preprocessors, name: prepared["pre"]}, cfg, {},
                           folder.path if folder else None)
        summary = copy.deepcopy(self.summary)
        summary["tasks"] = {**summary.get("tasks", {}),
                            **task_rows(run, [prepared], state, accelerator, cfg)}
        summary["tasks"][name]["added_with"] = tune
        if tune == "full":  # the earlier tasks' stored scores may no longer hold
            summary["notes"] = [*summary.get("notes", []), f"task {name!r} was added with "
                                "tune='full': the other tasks' scores are from before it"]
        trainable, _ = count_parameters(model)
        summary.update({"metrics": mean_metrics(summary["tasks"]),
                        "data": [t["data"] for t in cfg.tasks],
                        "added_task": {"name": name, "tune": tune, "trainable_params": trainable,
                                       "best_epoch": state.best_epoch, "epochs_run": state.epoch,
                                       "seconds": time.perf_counter() - t_start},
                        "total_params": sum(p.numel() for p in model.parameters()),
                        "peak_rss_mb": peak_rss_mb()})
        run.summary = summary
        if folder is not None:
            run.write(folder, state)
        return run


def load_multitask_run(run_dir: Path) -> MultiTaskRun:
    """A multi-task run folder (or its ``model/`` folder) as a :class:`MultiTaskRun`."""
    run_dir = Path(run_dir)
    model_dir = run_dir if (run_dir / "model.json").is_file() else RunFolder(run_dir).model_dir
    model, meta = load_multitask(model_dir)
    summary = {} if model_dir == run_dir else RunFolder(run_dir).read_summary()
    pres = {k: Preprocessor.from_dict(v) for k, v in meta["preprocessors"].items()}
    return MultiTaskRun(model, pres, FitConfig.from_dict(meta["config"]), summary, run_dir)
