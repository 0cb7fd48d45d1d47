"""``fit``: data -> model -> align -> refine -> scores, end to end, and its run folder."""

from __future__ import annotations

import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import BEFORE_OPTION, BEFORE_TASK_DEFAULT, FitConfig
from ..data import Preprocessor, load_dataset, split_train_val
from ..data.stream import prepare_streamed, streamed
from ..engine.augment import check_task as check_augment_task
from ..engine.loop import predict_outputs
from ..engine.optim import make_accelerator, step_work
from ..errors import CheckpointError, ConfigError, DataError
from ..models import ModelSpec, build_model
from ..models.bodies import takes_pixels
from ..models.tuning import apply_tuning, count_parameters
from ..tasks import get_task, infer_task
from ..tasks.regression import class_code_note
from .baselines import score_baselines
from .checkpoint import Checkpointer, data_fingerprint
from .members import nested_out_of_fold, out_of_fold_outputs, plan_members
from .trainer import MemberTrainer, refit_members, train_members
from .rival import describe_choice
from .folder import RunFolder
from .run import Run


def fit(data: Any = None, *, out: str | Path | None = None, config: FitConfig | dict | str | Path | None = None,
        overwrite: bool = False, progress: bool = True, resume: str | Path | None = None,
        merge: bool = False, sample_weight: Any = None, callbacks: Any = (), **options: Any) -> Run:
    """Fit a model on ``data`` and return the :class:`Run`.

    ``data`` is a spec string (``ucr:GunPoint``, ``file.npz``, ``file.csv``, ``folder:PATH``),
    an ``(x, y)`` pair or a dict of arrays. ``out`` is the run folder (None: nothing is
    written). ``config`` is a FitConfig, a dict or a YAML file; ``options`` override it.
    ``resume`` continues an unfinished run folder from its last checkpoint with the run's
    own config.yaml (``data`` only for runs fitted on in-memory arrays; options may only
    repeat the stored values); the result is identical to an uninterrupted run on CPU.
    ``merge`` (``--tune lora`` with a run folder) also writes ``RUN/model_merged/``, the
    adapters folded into the base weights (:meth:`Run.merge`); ``RUN/model/`` keeps the adapters.
    ``sample_weight`` (one non-negative number per training sample) weights the refine stage's
    loss and the validation scores; weights that are all equal change nothing.
    ``callbacks``: more training-loop callbacks for both stages (``engine/callbacks.py``), e.g.
    a search's pruning.
    """
    t_start = time.perf_counter()
    ckpt = None
    options, test_arrays = _test_arrays_out_of(options)
    from .multitask import fit_multitask, task_arrays_out_of

    options, task_arrays = task_arrays_out_of(options)
    if resume is not None:
        stored = Path(resume) / "config.yaml"
        if stored.is_file() and read_yaml_config(stored).get("tasks"):
            raise ConfigError(f"--resume {resume}: runs fitted on several tasks cannot be resumed "
                              "yet; start the run again with --overwrite")
        cfg, ckpt = resume_config(resume, data, out, config, overwrite, options)
        out = resume
    else:
        cfg = resolve_config(config, data if isinstance(data, (str, Path)) else None, options)
    if cfg.tasks:  # one model, many tasks (OFA): its own data handling and stage
        if data is not None or merge or sample_weight is not None:
            raise ConfigError("with a task list, give each task its data in the list; data=, "
                              "merge and sample_weight apply to one task")
        return fit_multitask(cfg, task_arrays, out, overwrite, progress, callbacks)
    if merge and (cfg.tune != "lora" or out is None):
        raise ConfigError("--merge writes RUN/model_merged for --tune lora runs: it needs "
                          "--tune lora and a run folder (out=...); or call Run.merge()")
    seed_everything(cfg.seed)

    # --- data: everything is checked before a run folder exists
    notes: list[str] = []  # what the user should know: printed (progress) and in summary.json
    ds = load_dataset(data if data is not None else cfg.data,
                      test_arrays if test_arrays is not None else cfg.test_data, cfg.label_column,
                      cfg.id_column, cfg.text_column)
    task = get_task(task_name(cfg, ds))
    task.check_head(cfg.head)
    task.configure(cfg)
    cfg = task.with_defaults(cfg, ds.x_train.shape[2:], table=ds.feature_names is not None)
    y_train, y_test = fit_targets_of(ds, cfg, task, notes, progress)
    captions = y_train is ds.text_train  # a caption per sample instead of labels
    codes = class_code_note(y_train) if cfg.task == "auto" and task.name == "regression" else None
    if codes:
        _note(notes, progress, codes)
    task.check_targets(ds.x_train, y_train)
    check_augment_task(cfg.augment, task)  # before any file is written
    members = plan_members(y_train, task, cfg) if several_members(cfg) else None
    if members is not None and ckpt is not None:
        raise ConfigError(f"--resume {resume}: runs with --folds, --ensemble or --method auto "
                          "cannot be resumed yet; start the run again with --overwrite")
    on_disk = streamed(ds.x_train, ds.x_test)
    if members is not None and on_disk:
        raise ConfigError("--folds, --ensemble and --method auto need the training data in memory; "
                          "data streamed from disk (.npy folders) train one model: drop them")
    # one model: the preprocessing is fitted on its training part; several: on all training data
    tr, va = (split_train_val(y_train, task, cfg.val_fraction, cfg.seed) if members is None
              else (np.arange(len(y_train)), np.arange(0)))
    image_norm = "unit" if takes_pixels(cfg.body) else "channel"
    if on_disk:  # inputs on disk: lazy views, normalised per read
        pre, x_tr, x_va, x_te = prepare_streamed(ds, tr, va, task, image_norm)
    else:
        pre = Preprocessor.fit(ds.x_train[tr], y_train[tr], task, ds.variable_length,
                               image_norm=image_norm, feature_names=ds.feature_names)
        if members is None:
            x_tr, x_va = pre.transform_x(ds.x_train[tr]), pre.transform_x(ds.x_train[va])
        else:
            x_all = pre.transform_x(ds.x_train)  # the members index their parts
        if ds.x_test is not None:
            x_te = pre.transform_x(ds.x_test)  # checks grid/channels now, not after training
    y_tr, y_va = pre.transform_y(y_train[tr]), pre.transform_y(y_train[va])
    if ds.x_test is not None:
        task.check_eval_targets(ds.x_test, y_test)  # e.g. unseen labels: clear error now
    weights = sample_weights(sample_weight, y_train, task, tr, va) if members is None else None
    pooled_weight = None  # --folds: every training sample's weight (mean 1) for out-of-fold scores
    if members is not None and sample_weight is not None:
        for m in members:  # checked now: a split with only zero weights fails before training
            sample_weights(sample_weight, y_train, task, m.train, m.val)
        everyone = np.arange(len(y_train))
        pooled = sample_weights(sample_weight, y_train, task, everyone, everyone)
        pooled_weight = None if pooled is None else pooled[1]
    fingerprint = data_fingerprint(ds.x_train, y_train, ds.x_test, y_test,
                                   *(() if weights is None else weights),
                                   *((ds.y_train, ds.y_test) if captions else ()))
    if ckpt is not None and ckpt["fingerprint"] != fingerprint:
        raise ConfigError(f"--resume {resume}: these data differ from the data the run was fitted "
                          "on; pass the same data, or start a new run")
    t_data = time.perf_counter() - t_start

    # --- model
    t0 = time.perf_counter()
    spec = ModelSpec(task=task.name, n_outputs=task.n_outputs, in_channels=int(ds.x_train.shape[1]),
                     spatial=list(ds.x_train.shape[2:]), body=cfg.body,
                     pretrained=cfg.tune != "scratch", max_tokens=cfg.max_tokens,
                     attention_dropout=cfg.attention_dropout, image_size=cfg.image_size,
                     augment=cfg.augment == "flip-crop", embedder=cfg.embedder, head_norm=cfg.head_norm,
                     **task.spec_extras())
    if members is not None:
        seed_everything(members[0].seed)
    model = _build(spec, cfg)
    task.check_model(model, [y_train[va], y_test])  # e.g. texts over the text tower's limit
    max_tokens = None if model.body.takes_pixels else min(cfg.max_tokens, model.body.max_tokens)
    if max_tokens is not None and max_tokens < cfg.max_tokens:  # the value used goes to summary.json
        _note(notes, progress, f"--max-tokens {cfg.max_tokens} is above the body's limit of "
              f"{max_tokens} tokens; using {max_tokens}")
    if cfg.align != "none" and model.body.source_modality is None:
        raise ConfigError(f"a {model.body.family} body has no source reference to align to "
                          "(no text or image input layer); use --align none")
    apply_tuning(model, cfg.tune, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                 lora_dropout=cfg.lora_dropout)
    trainable, total = count_parameters(model)
    accelerator, precision = make_accelerator(cfg.device, cfg.precision,
                                              step_work(model, cfg.batch_size, max_tokens))
    from ..engine.distributed import check_resume_processes, check_sharding

    check_sharding(cfg.distributed, accelerator, model)  # before any file is written
    check_resume_processes(ckpt, accelerator, str(resume))
    t_build = time.perf_counter() - t0

    from ..engine.trackers import tracker_callbacks  # --report-to: checked before any file is written

    trackers = tracker_callbacks(cfg.report_to, None if out is None else Path(out),
                                 {**cfg.to_dict(), "data": cfg.data or ds.name, "task": task.name},
                                 accelerator.is_main_process,
                                 resume_metrics=None if ckpt is None else ckpt["metrics"])
    callbacks = [*callbacks, *trackers]

    # only the main process writes the run folder (the others train, and log nothing)
    folder = RunFolder(Path(out)) if out is not None and accelerator.is_main_process else None
    if folder is not None and ckpt is not None:
        folder.write_metrics(ckpt["metrics"])  # epochs logged after the checkpoint are redone
    elif folder is not None:
        folder.start({**cfg.to_dict(), "data": cfg.data or ds.name, "task": task.name,
                      "precision": precision}, overwrite=overwrite)
    log = folder.log if folder is not None else (lambda rec: None)
    # a multi-member run keeps no resumable checkpoint (it cannot be resumed yet, see above)
    checkpointer = None
    if out is not None and members is None and (folder or cfg.distributed == "fsdp"):
        # --distributed fsdp: every rank gathers the sharded state, the main process writes it
        checkpointer = Checkpointer(Path(out), cfg.checkpoint_every, fingerprint,
                                    accelerator.num_processes, collective=cfg.distributed == "fsdp",
                                    writes=folder is not None)
    for tracker in trackers:  # an epoch goes to the trackers once a checkpoint holds it
        tracker.checkpointer = checkpointer
    trainer = MemberTrainer(task, cfg, accelerator, progress, callbacks, y_train,
                            lambda text: _note(notes, progress, text))

    if members is None:  # one model: the holdout split above
        model, state, aligned, t_align, t_refine = trainer.train(
            model, (x_tr, y_tr), (x_va, y_va), va, log, checkpointer, ckpt, weights)
        fitted = [model]
        states = [state]
    else:
        y_all = y_tr  # all training samples, encoded (tr holds them all)
        first = model

        def build(m: Any) -> Any:  # member 0 was built above (its seed set before)
            if m.index == 0:
                return first
            seed_everything(m.seed)
            new = _build(spec, cfg)
            apply_tuning(new, cfg.tune, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                         lora_dropout=cfg.lora_dropout)
            return new

        trained = train_members(
            trainer, members, build, x_all, y_all,
            lambda m: None if sample_weight is None else sample_weights(
                sample_weight, y_train, task, m.train, m.val), log, pooled_weight)
        fitted, states, member_rows = trained.fitted, trained.states, trained.rows
        oof_parts, curves = trained.oof_parts, trained.curves
        t_align, t_refine, aligned = trained.t_align, trained.t_refine, trained.aligned
        if cfg.refit:  # the fold models gave the out-of-fold scores; these are kept instead
            refits = refit_members(trainer, trained.common_epochs, len(members), build, x_all, y_all,
                                   None if pooled_weight is None else (pooled_weight, np.zeros(0)),
                                   log)
            fitted, states, member_rows = refits.fitted, [*states, *refits.states], member_rows + refits.rows
            t_align, t_refine, aligned = t_align + refits.t_align, t_refine + refits.t_refine, refits.aligned
        model, state = fitted[-1], states[0]

    # --- rivals (--method auto): compared out-of-fold on the training data only
    rival, choice, model_weight, t_rival = None, None, 1.0, 0.0
    rival_oof: dict[str, np.ndarray] = {}
    metrics: dict[str, Any] = {}
    if members is not None and cfg.folds:
        y_enc = y_all  # encoded targets of all training samples
        oof = out_of_fold_outputs(task, members, oof_parts, len(y_train))  # epochs chosen on them
        nested, epochs = nested_out_of_fold(task, members, curves, y_train, y_enc, pooled_weight)
        for row, epoch in zip(member_rows, epochs):
            row["nested_epoch"] = epoch  # the epoch the other folds chose (val_nested)
        w = () if pooled_weight is None else (pooled_weight,)
        metrics["val"] = task.score(y_train, task.decode(oof), *w)  # out-of-fold: every sample once
        metrics["val_nested"] = task.score(y_train, task.decode(nested), *w)  # the pessimistic bound
        if cfg.method == "auto":
            t0 = time.perf_counter()
            rival, choice, rival_oof = _choose_rival(task, cfg, ds, y_enc, oof, members, progress)
            model_weight = choice["model_weight"] if rival is not None else 1.0
            t_rival = time.perf_counter() - t0
            _note(notes, progress, describe_choice(choice))
        if folder is not None:  # for the user's own comparisons (nothing is chosen on the test split)
            folder.write_out_of_fold(y_enc, {"model": oof, "model_nested": nested, **rival_oof})
    elif members is not None:
        metrics["val"] = _mean_scores([r["val"] for r in member_rows])
    else:
        metrics["val"] = {k: v for k, v in (state.best_val or {}).items() if k != "loss"}

    # --- final scores: the test split is touched here only
    run = Run(fitted[0], pre, cfg, {}, folder.path if folder else None, members=fitted,
              rival=rival, model_weight=model_weight)
    run._accelerator = accelerator
    components: dict[str, Any] = {}
    if ds.x_test is not None:
        if members is None:
            with task.scoring(model, y_test):
                raw = predict_outputs(model, x_te, cfg.batch_size * 2, accelerator, shard=True)
            metrics["test"] = task.score_outputs(y_test, raw)
        else:  # supervised members: each predicts the test split once, for the run and its parts
            metrics["test"], components = run.scores_and_parts(ds.x_test, y_test)
        if captions and ds.y_test is not None:
            metrics["test_zero_shot"] = zero_shot_scores(run, ds.x_test, ds.y_test, notes, progress)
    t0 = time.perf_counter()
    baselines = {}
    if captions and cfg.baselines != "none":
        _note(notes, progress, "no baselines for a caption per sample (they predict labels)")
    elif ds.x_test is not None and cfg.baselines != "none":  # after the model: they never touch it
        baselines = score_baselines(cfg.baselines, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                                    task.name, cfg.seed)
    elif cfg.baselines != "none":
        _note(notes, progress, "no test split, so no baselines were scored; pass --test-data to "
              "compare the model with them")
    t_baselines = time.perf_counter() - t0
    summary = {
        "task": task.name, "data": cfg.data or ds.name, "body": cfg.body, "align": cfg.align,
        "tune": cfg.tune, "metrics": metrics, "baselines": baselines, "best_epoch": state.best_epoch,
        "epochs_run": state.epoch, "trainable_params": trainable, "total_params": total,
        "n_train": len(tr) if members is None else len(y_train), "n_val": len(va),
        "n_test": 0 if ds.x_test is None else len(ds.x_test),
        "device": str(accelerator.device), "precision": precision, "max_tokens": max_tokens,
        **model.embedder.layout(),  # how inputs reach the body: tokens and patch, or image size
        "peak_rss_mb": peak_rss_mb(), "skipped_batches": sum(s.skipped_batches for s in states),
        "resumed_from": None if ckpt is None else {"stage": ckpt["stage"], "epoch": ckpt["epoch"]},
        "notes": notes,
    }
    if trainer.head_inits:
        summary["head_init"] = trainer.head_inits if len(trainer.head_inits) > 1 else trainer.head_inits[0]
    if members is not None:
        summary["members"] = member_rows
        summary["validation"] = _validation_text(cfg)
        if trained.common_epochs:  # --fold-epoch common: seed -> the epoch all its folds keep
            summary["common_epoch"] = {str(k): v for k, v in trained.common_epochs.items()}
        if components:
            summary["components_test"] = components
        if choice is not None:
            summary["auto"] = {**choice, "rival": choice["rival"], "kept": rival is not None}
    if weights is not None:
        summary["sample_weight"] = "given: the loss and the validation scores are weighted"
    if folder is not None:
        run.save_models()
        from ..report import plot_learning_curves

        plot_learning_curves(state.history, task.primary[0], folder.report_dir / "learning_curves.png",
                             state.best_epoch)
        if aligned is not None:
            from ..report import plot_alignment

            plot_alignment(aligned, folder.report_dir, getattr(task, "classes", None))
        if merge:
            summary["merged_model"] = str(run.merge().path)
    summary["times"] = {"data": t_data, "build": t_build, "align": t_align, "refine": t_refine,
                        "rivals": t_rival, "baselines": t_baselines,
                        "total": time.perf_counter() - t_start}
    run.summary = summary
    for tracker in trackers:
        tracker.finish(summary)
    if folder is not None:
        folder.write_summary(summary)  # its presence marks the run complete
        from ..report import write_report

        write_report(folder.path, run=run, fitted_on=ds)  # RUN/report/index.html
    return run


def _validation_text(cfg: FitConfig) -> str:
    """What ``metrics.val`` is, for ``summary.json``."""
    if not cfg.folds:
        return "mean of the members' holdout scores"
    if cfg.fold_epoch == "common":
        kept = ("all fold models at the one epoch that was best on the pooled out-of-fold score "
                "(one choice on every training sample: mildly optimistic)")
    else:
        kept = ("at that model's best epoch (chosen on those samples: optimistic on small folds)")
    refit = ("; the kept model: one per seed refitted on all training data for that many "
             "epochs (the fold models' scores estimate it)" if cfg.refit else "")
    return ("out-of-fold: each training sample scored by the fold model that held it out, "
            f"{kept}; val_nested: at the epoch the other folds chose (pessimistic){refit}")


def _build(spec: ModelSpec, cfg: FitConfig) -> Any:
    """A new model for this fit, with the body's dropout set (``--dropout``)."""
    model = build_model(spec)
    set_body_dropout(model.body, cfg)
    return model


def set_body_dropout(body: Any, cfg: FitConfig) -> None:
    """``--dropout``: a number sets every dropout layer of the body; body (or unset) keeps the
    body's own."""
    if cfg.dropout not in (None, "body"):
        body.set_dropout(float(cfg.dropout))


def several_members(cfg: FitConfig) -> bool:
    """Whether the run trains more than one model (--folds, --ensemble, --method auto)."""
    return bool(cfg.folds) or cfg.ensemble > 1 or cfg.method == "auto"


def _choose_rival(task: Any, cfg: FitConfig, ds: Any, y_enc: np.ndarray, oof: np.ndarray,
                  members: list[Any], progress: bool
                  ) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """--method auto: the chosen rival refitted on all training data (None when the
    transformer alone won), the choice, and the rivals' out-of-fold outputs on the members' folds."""
    from .rival import Rival, choose_blend, out_of_fold, rival_names

    folds = [(m.train, m.val) for m in members if m.seed == members[0].seed]
    classify = getattr(task, "classes", None) is not None
    rival_oof, temps = {}, {}
    for name in rival_names(ds.x_train, task):
        if progress:
            print(f"--method auto: {name}, {len(folds)} folds", file=sys.stderr)
        rival_oof[name], temps[name] = out_of_fold(name, ds.x_train, y_enc, classify, folds, cfg.seed)
    choice = choose_blend(task, ds.y_train, y_enc, oof, rival_oof)
    if choice["rival"] is None:
        return None, choice, rival_oof
    name = choice["rival"]
    return Rival.fit(name, ds.x_train, y_enc, classify, cfg.seed, temps[name]), choice, rival_oof


def _mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def fit_targets_of(ds: Any, cfg: FitConfig, task: Any, notes: list[str], progress: bool
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """The (training, test) targets: the labels, or for a contrastive fit on data with a
    caption per sample, the captions (the labels, if any, then score zero-shot on the test split)."""
    if ds.text_train is None:
        return ds.y_train, ds.y_test
    if cfg.objective != "contrastive":  # (captions without labels: refused by task_name)
        _note(notes, progress, "the captions (text_train) are used by --objective contrastive "
              "only; this supervised fit ignores them")
        return ds.y_train, ds.y_test
    if ds.x_test is not None and ds.text_test is None:
        raise DataError("the training data have captions but the test data have none; give the "
                        "test split its captions (text_test or the --text-column), or no test split")
    task.use_captions()
    return ds.text_train, ds.text_test


def zero_shot_scores(run: Run, x: np.ndarray, y: np.ndarray, notes: list[str], progress: bool
                     ) -> dict[str, float]:
    """A captioned run's zero-shot scores among the test split's own label words (through the
    run's templates); labels that are not words (numbers) are skipped with a note."""
    if y.dtype.kind not in "USO":
        _note(notes, progress, "the test labels are not words, so no zero-shot score over them")
        return {}
    from ..tasks.classification import Classification

    labels = [str(v) for v in np.unique(y).tolist()]
    pred = run.zero_shot(x, labels)
    return Classification().score(np.asarray([str(v) for v in y.tolist()]), pred.astype(str))


def task_name(cfg: FitConfig, ds: Any) -> str:
    """The task: the contrastive one for ``--objective contrastive``, else ``--task`` (``auto``:
    inferred from the labels)."""
    if cfg.objective == "contrastive":
        return "contrastive"
    if ds.y_train is None:
        raise ConfigError("the data hold captions and no labels: fit them with --objective "
                          "contrastive, or add labels")
    return infer_task(ds.x_train, ds.y_train) if cfg.task == "auto" else cfg.task


def sample_weights(sample_weight: Any, y: np.ndarray, task: Any, tr: np.ndarray, va: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Checked (training, validation) weights, each scaled to mean 1; None when no weights or
    all weights are equal (then they change nothing: the loss is a weighted mean)."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"sample_weight must be numbers ({e})") from None
    if w.shape != (len(y),):
        raise DataError(f"sample_weight has shape {w.shape}; give one weight per training sample, "
                        f"shape ({len(y)},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError("sample_weight must be finite and non-negative")
    if not w.any():
        raise DataError("sample_weight: every weight is zero; give some samples a positive weight")
    labels = task.stratify(y)  # the classes, for tasks that have them
    if labels is not None:
        empty = [c for c in np.unique(labels).tolist() if not w[labels == c].any()]
        if empty:
            raise DataError(f"sample_weight gives class {empty[0]!r} only zero weights, so it cannot "
                            "be learnt; drop that class's samples or give them a positive weight")
    if np.all(w == w[0]):
        return None
    for part, name in ((tr, "training"), (va, "validation")):
        if not w[part].any():
            raise DataError(f"sample_weight: the {name} split's samples all have weight zero; "
                            "pass another --seed or --val-fraction, or fewer zero weights")
    return w[tr] / w[tr].mean(), w[va] / w[va].mean()


def _note(notes: list[str], progress: bool, text: str) -> None:
    """Something the user should know before waiting for the training: shown at once."""
    notes.append(text)
    if progress:
        print(f"note: {text}", file=sys.stderr)


def _test_arrays_out_of(options: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """In-memory test data (``test_data=(x, y)``) stays out of the config: config.yaml and
    model.json record "arrays" (as for ``data``), and the arrays are returned beside."""
    test = options.get("test_data")
    if test is None or isinstance(test, str):
        return options, None
    if isinstance(test, Path):
        return {**options, "test_data": str(test)}, None
    return {**options, "test_data": "arrays"}, test


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
    # numpy scalars (np.logspace grids) as plain numbers: config.yaml and model.json record them
    base.update({k: v.item() if isinstance(v, np.generic) else v
                 for k, v in options.items() if v is not None})
    if data is not None:
        base["data"] = str(data)
    return FitConfig.from_dict(base)


RESUME_FREE = ("device", "report_to")  # options a resume may change (device: results may differ in the last bits)


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
    stored = {**BEFORE_OPTION, **read_yaml_config(folder.path / "config.yaml")}
    stored.update({k: v for k, v in BEFORE_TASK_DEFAULT.items() if stored.get(k) is None})
    stored = FitConfig.from_dict(stored).to_dict()
    given = {k: v for k, v in options.items() if v is not None}
    if stored.get("test_data") == "arrays" and "test_data" not in given:
        raise ConfigError(f"{where}: the run was fitted with in-memory test arrays; pass the same "
                          "test_data again: transmodal.fit(data, resume=RUN, test_data=(x, y))")
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
    from ..config import read_yaml

    values = read_yaml(path, f"config file {path} does not exist") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value")
    return values


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB: ``VmHWM`` on Linux, else
    ``ru_maxrss``. Not ``ru_maxrss`` on Linux: the kernel carries it over an exec, so a process
    started by another (``subprocess``: vfork + exec) reports at least its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, else KiB


__all__ = ["fit", "resolve_config", "read_yaml_config"]
