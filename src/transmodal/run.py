"""``fit`` (align then refine, end to end), the ``Run`` it returns, and ``load``."""

from __future__ import annotations

import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpointer, data_fingerprint
from .config import FitConfig
from .data import Dataset, as_inputs, check_task_labels, infer_task, load_dataset, split_train_val
from .errors import CheckpointError, ConfigError, DataError
from .metrics import PRIMARY, score
from .image_model import is_cnn_body
from .model import ModelSpec, TransmodalModel, build_model, input_layout, load_model, save_model
from .preprocess import Preprocessor
from .runfolder import RunFolder
from .train import make_accelerator, memory_advice, predict_outputs, refine
from .tuning import apply_tuning, count_parameters


class Run:
    """A fitted model with its preprocessing; predicts on raw user inputs."""

    def __init__(self, model: TransmodalModel, preprocessor: Preprocessor,
                 config: FitConfig, summary: dict[str, Any], path: Path | None = None) -> None:
        self.model = model
        self.preprocessor = preprocessor
        self.config = config
        self.summary = summary
        self.path = path
        self._accelerator = None

    @property
    def task(self) -> str:
        return self.preprocessor.task

    @property
    def classes(self) -> list[Any]:
        return list(self.preprocessor.classes)

    def _outputs(self, x: Any) -> np.ndarray:
        if self._accelerator is None:
            self._accelerator, _ = make_accelerator(self.config.device, self.config.precision)
            self.model.to(self._accelerator.device)
        target = self.preprocessor.input_shape[-1] if self.preprocessor.variable_length else None
        arr, _ = as_inputs(x, target_length=target)
        if not np.isfinite(arr).all():
            raise DataError("input contains NaN or inf; fill or drop those values first")
        batch = self.config.batch_size * 2
        with memory_advice("predict", batch, fix="the model itself may not fit this device: "
                           "predict on a device with more memory (--device cpu)"):
            return predict_outputs(self.model, self.preprocessor.transform_x(arr), batch,
                                   self._accelerator)

    def predict(self, x: Any) -> np.ndarray:
        """Labels (classification) or values in the training targets' units."""
        return self.preprocessor.inverse_y(self._outputs(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        if self.task != "classification":
            raise ConfigError("predict_proba is for classification runs only")
        return torch.softmax(torch.from_numpy(self._outputs(x)), dim=1).numpy()

    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        y = np.asarray(y)
        if self.task == "classification":
            self.preprocessor.transform_y(y)  # labels the model never saw: clear error
        return score(self.task, y, self.predict(x))

    def merge(self, out: str | Path | None = None) -> "Run":
        """A ``--tune lora`` run with its adapters folded into the base weights.

        Returns a new Run holding a plain model (the same predictions, no adapters, no base-body
        reference, no peft needed to load it). It is written as a normal model folder to ``out``,
        by default ``RUN/model_merged/`` when this run has a folder; ``transmodal.load`` reads it.
        """
        import copy

        from .tuning import merge_lora

        if not getattr(self.model.spec, "lora", None):
            raise ConfigError("only --tune lora runs have adapters to merge")
        model = merge_lora(copy.deepcopy(self.model).cpu())
        target = Path(out) if out is not None else (self.path / "model_merged" if self.path else None)
        if target is not None:
            save_model(model, target, {"preprocessor": self.preprocessor.to_dict(),
                                       "config": self.config.to_dict()})
        return Run(model, self.preprocessor, self.config, dict(self.summary), target)


def fit(data: Any = None, *, out: str | Path | None = None, config: FitConfig | dict | str | Path | None = None,
        overwrite: bool = False, progress: bool = True, resume: str | Path | None = None,
        merge: bool = False, **options: Any) -> Run:
    """Fit a model on ``data`` and return the :class:`Run`.

    ``data`` is a spec string (``ucr:GunPoint``, ``file.npz``, ``file.csv``, ``folder:PATH``),
    an ``(x, y)`` pair or a dict of arrays. ``out`` is the run folder (None: nothing is
    written). ``config`` is a FitConfig, a dict or a YAML file; ``options`` override it.
    ``resume`` continues an unfinished run folder from its last checkpoint with the run's
    own config.yaml (``data`` only for runs fitted on in-memory arrays; options may only
    repeat the stored values); the result is identical to an uninterrupted run on CPU.
    ``merge`` (``--tune lora`` with a run folder) also writes ``RUN/model_merged/``, the
    adapters folded into the base weights (:meth:`Run.merge`); ``RUN/model/`` keeps the adapters.
    """
    t_start = time.perf_counter()
    ckpt = None
    if resume is not None:
        cfg, ckpt = resume_config(resume, data, out, config, overwrite, options)
        out = resume
    else:
        cfg = resolve_config(config, data if isinstance(data, (str, Path)) else None, options)
    if merge and (cfg.tune != "lora" or out is None):
        raise ConfigError("--merge writes RUN/model_merged for --tune lora runs: it needs "
                          "--tune lora and a run folder (out=...); or call Run.merge()")
    seed_everything(cfg.seed)

    # --- data: everything is checked before a run folder exists
    ds = load_dataset(data if data is not None else cfg.data, cfg.test_data, cfg.label_column)
    task = infer_task(ds.x_train, ds.y_train) if cfg.task == "auto" else cfg.task
    check_task_labels(task, ds.x_train, ds.y_train)
    if ds.x_test is not None and task == "dense":
        check_task_labels(task, ds.x_test, ds.y_test)
    tr, va = split_train_val(ds.y_train, task, cfg.val_fraction, cfg.seed)
    pre = Preprocessor.fit(ds.x_train[tr], ds.y_train[tr], task, ds.variable_length,
                           image_norm="unit" if is_cnn_body(cfg.body) else "channel")
    x_tr, y_tr = pre.transform_x(ds.x_train[tr]), pre.transform_y(ds.y_train[tr])
    x_va, y_va = pre.transform_x(ds.x_train[va]), pre.transform_y(ds.y_train[va])
    if ds.x_test is not None:
        x_te = pre.transform_x(ds.x_test)  # checks grid/channels now, not after training
        if task == "classification":
            pre.transform_y(ds.y_test)  # labels the model never saw: clear error now
    fingerprint = data_fingerprint(ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    if ckpt is not None and ckpt["fingerprint"] != fingerprint:
        raise ConfigError(f"--resume {resume}: these data differ from the data the run was fitted "
                          "on; pass the same data, or start a new run")
    t_data = time.perf_counter() - t_start

    # --- model
    t0 = time.perf_counter()
    spec = ModelSpec(task=task, n_outputs=pre.n_outputs, in_channels=int(ds.x_train.shape[1]),
                     spatial=list(ds.x_train.shape[2:]), body=cfg.body,
                     pretrained=cfg.tune != "scratch", max_tokens=cfg.max_tokens,
                     attention_dropout=cfg.attention_dropout, image_size=cfg.image_size,
                     augment=cfg.augment)
    model = build_model(spec)
    apply_tuning(model, cfg.tune, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                 lora_dropout=cfg.lora_dropout)
    trainable, total = count_parameters(model)
    accelerator, precision = make_accelerator(cfg.device, cfg.precision)
    t_build = time.perf_counter() - t0

    folder = RunFolder(Path(out)) if out is not None else None
    if folder is not None and ckpt is not None:
        folder.write_metrics(ckpt["metrics"])  # epochs logged after the checkpoint are redone
    elif folder is not None:
        folder.create(overwrite=overwrite)
        folder.write_config({**cfg.to_dict(), "data": cfg.data or ds.name, "task": task,
                             "precision": precision})
    log = folder.log if folder is not None else (lambda rec: None)
    checkpointer = Checkpointer(folder.path, cfg.checkpoint_every, fingerprint) if folder else None

    # --- stage 1: align
    t0 = time.perf_counter()
    aligned = None
    if cfg.align != "none" and not (ckpt is not None and ckpt["stage"] == "refine"):
        from .align.stage import align, pseudo_labels
        from .body import resolve_body_path

        labels = pseudo_labels(task, y_tr, cfg.n_pseudo_labels, cfg.seed)
        with memory_advice("align", cfg.batch_size):
            aligned = align(model, x_tr, labels, cfg, resolve_body_path(cfg.body),
                            accelerator.device, log=log, progress=progress,
                            checkpointer=checkpointer,
                            resume=ckpt if ckpt is not None and ckpt["stage"] == "align" else None)
    t_align = time.perf_counter() - t0

    # --- stage 2: refine
    t0 = time.perf_counter()
    val_true = ds.y_train[va]
    with memory_advice("refine", cfg.batch_size):
        state = refine(model, task, (x_tr, y_tr), (x_va, y_va), cfg, accelerator,
                       decode=pre.inverse_y, val_true=val_true, log=log, progress=progress,
                       checkpointer=checkpointer,
                       resume=ckpt if ckpt is not None and ckpt["stage"] == "refine" else None)
    model = accelerator.unwrap_model(model)
    t_refine = time.perf_counter() - t0

    # --- final scores: the test split is touched here only
    run = Run(model, pre, cfg, {}, folder.path if folder else None)
    run._accelerator = accelerator
    metrics = {"val": {k: v for k, v in (state.best_val or {}).items() if k != "loss"}}
    if ds.x_test is not None:
        raw = predict_outputs(model, x_te, cfg.batch_size * 2, accelerator)
        metrics["test"] = score(task, ds.y_test, pre.inverse_y(raw))
    summary = {
        "task": task, "data": cfg.data or ds.name, "body": cfg.body, "align": cfg.align,
        "tune": cfg.tune, "metrics": metrics, "best_epoch": state.best_epoch,
        "epochs_run": state.epoch, "trainable_params": trainable, "total_params": total,
        "n_train": len(tr), "n_val": len(va), "n_test": 0 if ds.x_test is None else len(ds.x_test),
        "device": str(accelerator.device), "precision": precision,
        **input_layout(model),
        "peak_rss_mb": peak_rss_mb(), "skipped_batches": state.skipped_batches,
        "resumed_from": None if ckpt is None else {"stage": ckpt["stage"], "epoch": ckpt["epoch"]},
    }
    if folder is not None:
        save_model(model, folder.model_dir, {"preprocessor": pre.to_dict(), "config": cfg.to_dict()})
        from .report import plot_learning_curves

        plot_learning_curves(state.history, PRIMARY[task][0], folder.report_dir / "learning_curves.png")
        if aligned is not None:
            from .report import plot_alignment

            plot_alignment(aligned, folder.report_dir)
        if merge:
            summary["merged_model"] = str(run.merge().path)
    summary["times"] = {"data": t_data, "build": t_build, "align": t_align, "refine": t_refine,
                        "total": time.perf_counter() - t_start}
    run.summary = summary
    if folder is not None:
        folder.write_summary(summary)  # last: its presence marks the run complete
    return run


def resolve_config(config: FitConfig | dict | str | Path | None, data: Any,
                   options: dict[str, Any]) -> FitConfig:
    """YAML/dict config, then keyword options on top (the command line overrides the file)."""
    if isinstance(config, FitConfig):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    elif config is not None:
        base = read_yaml_config(Path(config))
    else:
        base = {}
    base.update({k: v for k, v in options.items() if v is not None})
    if data is not None:
        base["data"] = str(data)
    return FitConfig.from_dict(base)


RESUME_FREE = ("device",)  # options a resume may change (results then may differ in the last bits)


def resume_config(run_dir: str | Path, data: Any, out: Any, config: Any, overwrite: bool,
                  options: dict[str, Any]) -> tuple[FitConfig, dict[str, Any]]:
    """The config of an unfinished run and its last checkpoint; options may only repeat it."""
    folder = RunFolder(Path(run_dir))
    where = f"--resume {run_dir}"
    if not (folder.path / "config.yaml").is_file():
        raise CheckpointError(f"{where}: not a run folder (no config.yaml); nothing to resume")
    if folder.summary_path.exists():
        raise ConfigError(f"{where}: the run is already complete (summary.json exists); load it "
                          "with transmodal.load, or start a new run with another --out")
    if overwrite:
        raise ConfigError(f"{where} and --overwrite conflict: a resume keeps the run folder")
    if out is not None and Path(out).resolve() != folder.path.resolve():
        raise ConfigError(f"{where} continues in {run_dir}; drop --out {out}")
    if config is not None:
        raise ConfigError(f"{where} uses the run's own config.yaml; drop --config")
    stored = FitConfig.from_dict(read_yaml_config(folder.path / "config.yaml")).to_dict()
    given = {k: v for k, v in options.items() if v is not None}
    merged = FitConfig.from_dict({**stored, **given})  # unknown or invalid options: clear error
    diff = [k for k in given if k not in RESUME_FREE and getattr(merged, k) != stored[k]]
    if diff:
        shown = ", ".join(f"--{k.replace('_', '-')} {given[k]} (the run has {stored[k]})" for k in diff)
        raise ConfigError(f"{where}: {shown}; a resumed run keeps its own options: drop them, "
                          "or start a new run")
    if data is None and stored["data"] in ("arrays", "data") and not Path(stored["data"]).exists():
        raise ConfigError(f"{where}: the run was fitted on in-memory arrays; pass the same arrays "
                          "again: transmodal.fit(data, resume=RUN)")
    ckpt = Checkpointer(folder.path).load()
    if ckpt is None:
        raise CheckpointError(f"{where}: the run stopped before its first checkpoint (written at "
                              "the end of its first epoch); start it again with --overwrite")
    return merged, ckpt


def read_yaml_config(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value")
    return values


def load(run_dir: str | Path) -> Run:
    """Load a finished run folder (safetensors + JSON; nothing is unpickled), or a model folder
    such as ``RUN/model_merged`` (its summary is then empty)."""
    if (Path(run_dir) / "model.json").is_file():  # a model folder: it carries its preprocessing
        model, meta = load_model(Path(run_dir))
        return Run(model, Preprocessor.from_dict(meta["preprocessor"]),
                   FitConfig.from_dict(meta["config"]), {}, Path(run_dir))
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    model, meta = load_model(folder.model_dir)
    pre = Preprocessor.from_dict(meta["preprocessor"])
    cfg = FitConfig.from_dict(meta["config"])
    return Run(model, pre, cfg, summary, folder.path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


__all__ = ["Run", "fit", "load", "Dataset"]
