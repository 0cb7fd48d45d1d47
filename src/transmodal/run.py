"""``fit`` (align then refine, end to end), the ``Run`` it returns, and ``load``."""

from __future__ import annotations

import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import FitConfig
from .data import Dataset, as_inputs, check_task_labels, infer_task, load_dataset, split_train_val
from .errors import ConfigError, DataError
from .metrics import PRIMARY, score
from .model import ModelSpec, TransmodalModel, build_model, load_model, save_model
from .preprocess import Preprocessor
from .runfolder import RunFolder
from .train import make_accelerator, predict_outputs, refine
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
        return predict_outputs(self.model, self.preprocessor.transform_x(arr),
                               self.config.batch_size * 2, self._accelerator)

    def predict(self, x: Any) -> np.ndarray:
        """Labels (classification) or values in the training targets' units."""
        return self.preprocessor.inverse_y(self._outputs(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        if self.task != "classification":
            raise ConfigError("predict_proba is for classification runs only")
        return torch.softmax(torch.from_numpy(self._outputs(x)), dim=1).numpy()

    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        return score(self.task, np.asarray(y), self.predict(x))


def fit(data: Any = None, *, out: str | Path | None = None, config: FitConfig | dict | str | Path | None = None,
        overwrite: bool = False, progress: bool = True, **options: Any) -> Run:
    """Fit a model on ``data`` and return the :class:`Run`.

    ``data`` is a spec string (``ucr:GunPoint``, ``file.npz``, ``file.csv``, ``folder:PATH``),
    an ``(x, y)`` pair or a dict of arrays. ``out`` is the run folder (None: nothing is
    written). ``config`` is a FitConfig, a dict or a YAML file; ``options`` override it.
    """
    t_start = time.perf_counter()
    cfg = resolve_config(config, data if isinstance(data, (str, Path)) else None, options)
    seed_everything(cfg.seed)

    # --- data: everything is checked before a run folder exists
    ds = load_dataset(data if data is not None else cfg.data, cfg.test_data, cfg.label_column)
    task = infer_task(ds.x_train, ds.y_train) if cfg.task == "auto" else cfg.task
    check_task_labels(task, ds.x_train, ds.y_train)
    tr, va = split_train_val(ds.y_train, task, cfg.val_fraction, cfg.seed)
    pre = Preprocessor.fit(ds.x_train[tr], ds.y_train[tr], task, ds.variable_length)
    x_tr, y_tr = pre.transform_x(ds.x_train[tr]), pre.transform_y(ds.y_train[tr])
    x_va, y_va = pre.transform_x(ds.x_train[va]), pre.transform_y(ds.y_train[va])
    if ds.x_test is not None:
        x_te = pre.transform_x(ds.x_test)  # checks grid/channels now, not after training
        if task == "classification":
            pre.transform_y(ds.y_test)  # labels the model never saw: clear error now
    t_data = time.perf_counter() - t_start

    # --- model
    t0 = time.perf_counter()
    spec = ModelSpec(task=task, n_outputs=pre.n_outputs, in_channels=int(ds.x_train.shape[1]),
                     spatial=list(ds.x_train.shape[2:]), body=cfg.body,
                     pretrained=cfg.tune != "scratch", max_tokens=cfg.max_tokens,
                     attention_dropout=cfg.attention_dropout)
    model = build_model(spec)
    apply_tuning(model, cfg.tune)
    trainable, total = count_parameters(model)
    accelerator, precision = make_accelerator(cfg.device, cfg.precision)
    t_build = time.perf_counter() - t0

    folder = RunFolder(Path(out)) if out is not None else None
    if folder is not None:
        folder.create(overwrite=overwrite)
        folder.write_config({**cfg.to_dict(), "data": cfg.data or ds.name, "task": task,
                             "precision": precision})
    log = folder.log if folder is not None else (lambda rec: None)

    # --- stage 1: align
    t0 = time.perf_counter()
    if cfg.align != "none":
        raise ConfigError(f"--align {cfg.align} is not available in this version yet; use --align none")
    t_align = time.perf_counter() - t0

    # --- stage 2: refine
    t0 = time.perf_counter()
    val_true = ds.y_train[va]
    state = refine(model, task, (x_tr, y_tr), (x_va, y_va), cfg, accelerator,
                   decode=pre.inverse_y, val_true=val_true, log=log, progress=progress)
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
        "tokens": int(np.prod(model.embedder.grid)), "patch": list(model.embedder.patch),
        "peak_rss_mb": peak_rss_mb(),
    }
    if folder is not None:
        save_model(model, folder.model_dir, {"preprocessor": pre.to_dict(), "config": cfg.to_dict()})
        from .report import plot_learning_curves

        plot_learning_curves(state.history, PRIMARY[task][0], folder.report_dir / "learning_curves.png")
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
    """Load a finished run folder (safetensors + JSON; nothing is unpickled)."""
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
