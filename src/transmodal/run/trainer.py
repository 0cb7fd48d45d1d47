"""Training the members of a fit: align then refine each model, one after another or, for
k-fold runs that choose one epoch for every fold (``--fold-epoch common``), side by side.

``fit.py`` plans the run and scores it; this module trains what it planned.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..config import FitConfig
from ..data.stream import bounded_sample
from ..engine.callbacks import CallbackList, StopAfter, ValidationOutputs
from ..engine.loop import predict_outputs
from ..engine.optim import memory_advice
from ..engine.refine import refine, refine_setup
from .members import Member


class MemberTrainer:
    """Align then refine one model (a member) on its training and validation parts."""

    def __init__(self, task: Any, cfg: FitConfig, accelerator: Any, progress: bool,
                 callbacks: list[Any], y_user: np.ndarray, note: Any) -> None:
        self.task, self.cfg, self.accelerator = task, cfg, accelerator
        self.progress, self.callbacks, self.y_user, self.note = progress, callbacks, y_user, note
        self.head_inits: list[str] = []  # what each member's head started from (--head-init)

    def train(self, model: Any, train: tuple[np.ndarray, np.ndarray],
              val: tuple[np.ndarray, np.ndarray], val_idx: np.ndarray, log: Any,
              checkpointer: Any, ckpt: dict[str, Any] | None, weights: Any,
              cfg: FitConfig | None = None, refine_callbacks: Sequence[Any] = (),
              select: bool = True) -> tuple[Any, Any, Any, float, float]:
        """(trained model unwrapped, refine state, alignment record, align s, refine s);
        ``refine_callbacks`` run in the refine stage only (a fold's validation outputs);
        ``select=False``: no best epoch or early stopping (the last epoch is kept)."""
        cfg = cfg or self.cfg
        model, aligned, t_align, t_probe, twin = self.start(model, train, log, checkpointer, ckpt,
                                                            weights, cfg)
        t0 = time.perf_counter()
        with memory_advice("refine", cfg.batch_size):
            state = refine(model, self.task, train, val, self.y_user[val_idx], cfg, self.accelerator,
                           log=log, progress=self.progress, checkpointer=checkpointer,
                           resume=ckpt if ckpt is not None and ckpt["stage"] == "refine" else None,
                           weights=weights, callbacks=[*self.callbacks, *refine_callbacks],
                           select=select)
        t_refine = t_probe + time.perf_counter() - t0
        model = self.end(model, twin, cfg)
        self.release([state])
        return model, state, aligned, t_align, t_refine

    def start(self, model: Any, train: tuple[np.ndarray, np.ndarray], log: Any, checkpointer: Any,
              ckpt: dict[str, Any] | None, weights: Any, cfg: FitConfig
              ) -> tuple[Any, Any, float, float, Any]:
        """Everything before the refine loop: prepare the model, align it, warm-start its head
        (--head-init probe), shard it (FSDP). (model ready to refine, alignment record,
        align s, probe s, the FSDP twin or None)."""
        accelerator, task = self.accelerator, self.task
        fsdp = cfg.distributed == "fsdp"  # whole model until the refine stage shards it
        model = model.to(accelerator.device) if fsdp else accelerator.prepare(model)  # once
        x_tr, y_tr = train

        if ckpt is None:  # a fresh model: what its embedder fits on the training inputs (rocket)
            fit_inputs = getattr(accelerator.unwrap_model(model).embedder, "fit_inputs", None)
            if fit_inputs is not None:
                fit_inputs(x_tr)

        # --- stage 1: align
        t0 = time.perf_counter()
        aligned = None
        if cfg.align != "none" and not (ckpt is not None and ckpt["stage"] == "refine"):
            from ..align.stage import align
            from ..models.bodies.hf import resolve_body_path

            labels = task.alignment_labels(y_tr, cfg.n_pseudo_labels, cfg.seed)
            x_align, labels, sampled = bounded_sample(x_tr, labels, cfg.seed)  # data on disk: bounded
            if sampled:
                self.note(sampled)
            with memory_advice("align", cfg.batch_size):
                aligned = align(model, x_align, labels, cfg, resolve_body_path(cfg.body), accelerator,
                                log=log, progress=self.progress, checkpointer=checkpointer,
                                resume=ckpt if ckpt is not None and ckpt["stage"] == "align" else None,
                                callbacks=self.callbacks)
        t_align = time.perf_counter() - t0

        # --- stage 2 begins: a resumed refine stage restores the head it had
        t0 = time.perf_counter()
        if cfg.head_init == "probe" and not (ckpt is not None and ckpt["stage"] == "refine"):
            from ..engine.probe import warm_start_head

            self.head_inits.append(warm_start_head(
                accelerator.unwrap_model(model), task, x_tr, y_tr,
                None if weights is None else weights[0], 2 * cfg.batch_size,
                accelerator.device, accelerator.autocast))
        twin = None
        if fsdp:
            from ..engine.distributed import meta_twin, shard_model

            twin = meta_twin(model)
            model = shard_model(model, accelerator)
        return model, aligned, t_align, time.perf_counter() - t0, twin

    def release(self, states: Sequence[Any]) -> None:
        """After training: the best-weights copies (loaded into the models already) and what
        accelerate keeps of every prepared optimizer, loader and model, until free_memory()."""
        for state in states:
            state.best_weights = None
        self.accelerator.free_memory()

    def end(self, model: Any, twin: Any, cfg: FitConfig) -> Any:
        """The trained model as a plain module (FSDP: every rank gathers the weights)."""
        if cfg.distributed == "fsdp":
            from ..engine.distributed import gather_model

            return gather_model(model, twin, self.accelerator.device)
        return self.accelerator.unwrap_model(model)


@dataclass
class MembersResult:
    """What training the members gave: the plain models, their refine states, a row per member
    for ``summary.json``, each fold's out-of-fold outputs at its kept weights and its
    validation outputs per epoch (k-fold runs), the common epoch (``--fold-epoch common``)."""

    fitted: list[Any] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    oof_parts: list[np.ndarray] = field(default_factory=list)
    curves: list[list[np.ndarray]] = field(default_factory=list)
    common_epochs: dict[int, int] = field(default_factory=dict)  # seed -> the epoch chosen
    aligned: Any = None  # the last member's alignment record (the report plots it)
    t_align: float = 0.0
    t_refine: float = 0.0


def train_members(trainer: MemberTrainer, members: list[Member], build: Callable[[Member], Any],
                  x_all: np.ndarray, y_all: np.ndarray, sample_weights: Callable[[Member], Any],
                  log: Any, pooled_weight: np.ndarray | None = None) -> MembersResult:
    """Train every member (``build(m)`` makes member m's fresh model, its seed set first;
    ``sample_weights(m)`` its (training, validation) weights or None). k-fold runs with
    ``--fold-epoch common`` train the folds of each seed side by side and keep them all at one
    epoch, chosen with ``pooled_weight`` (every training sample's weight, mean 1, or None);
    otherwise one member after another, each at its own best epoch."""
    cfg = trainer.cfg
    result = MembersResult()
    together = bool(cfg.folds) and cfg.fold_epoch == "common"
    groups: dict[int, list[Member]] = {}
    for m in members:  # the folds of one seed train together
        groups.setdefault(m.seed if together else m.index, []).append(m)
    for group in groups.values():
        if together:
            _train_side_by_side(trainer, group, build, x_all, y_all, sample_weights, log, result,
                                len(members), pooled_weight)
        else:
            _train_one(trainer, group[0], build, x_all, y_all, sample_weights, log, result,
                       len(members))
    return result


def _announce(trainer: MemberTrainer, m: Member, n: int) -> None:
    if trainer.progress:
        print(f"member {m.index + 1}/{n}: seed {m.seed}"
              + (f", fold {m.fold + 1}/{trainer.cfg.folds}" if m.fold is not None else ""),
              file=sys.stderr)


def _member_log(log: Any, m: Member, **extra: Any) -> Any:
    return lambda rec: log({**rec, "member": m.index, **extra})


def _finish_member(trainer: MemberTrainer, m: Member, model: Any, state: Any, x_all: np.ndarray,
                   curve: list[np.ndarray], result: MembersResult) -> None:
    """Keep a trained member; a fold's out-of-fold outputs are those of its kept epoch: taken
    from its curve when all folds kept one epoch (``common_epochs``), else predicted again."""
    result.fitted.append(model)
    result.states.append(state)
    result.rows.append({**m.describe(), "best_epoch": state.best_epoch, "epochs_run": state.epoch,
                        "val": {k: v for k, v in (state.best_val or {}).items() if k != "loss"}})
    if trainer.cfg.folds:
        result.curves.append(curve)
        result.oof_parts.append(
            curve[state.best_epoch - 1] if m.seed in result.common_epochs else
            predict_outputs(model, x_all[m.val], trainer.cfg.batch_size * 2, trainer.accelerator,
                            shard=True))


def _train_one(trainer: MemberTrainer, m: Member, build: Callable[[Member], Any], x_all: np.ndarray,
               y_all: np.ndarray, sample_weights: Callable[[Member], Any], log: Any,
               result: MembersResult, n: int) -> None:
    """One member, selected on its own validation part."""
    cfg = trainer.cfg
    model = build(m)
    _announce(trainer, m, n)
    outputs = ValidationOutputs()  # --folds: each epoch's outputs on this fold
    model, state, result.aligned, ta, tf = trainer.train(
        model, (x_all[m.train], y_all[m.train]), (x_all[m.val], y_all[m.val]), m.val,
        _member_log(log, m), None, None, sample_weights(m), dataclasses.replace(cfg, seed=m.seed),
        refine_callbacks=[outputs] if cfg.folds else [])
    result.t_align, result.t_refine = result.t_align + ta, result.t_refine + tf
    _finish_member(trainer, m, model, state, x_all, outputs.per_epoch, result)


def _train_side_by_side(trainer: MemberTrainer, group: list[Member], build: Callable[[Member], Any],
                        x_all: np.ndarray, y_all: np.ndarray,
                        sample_weights: Callable[[Member], Any], log: Any,
                        result: MembersResult, n: int, pooled_weight: np.ndarray | None) -> None:
    """The folds of one seed: each aligned and set up in turn (as alone), then refined side by
    side and kept at the epoch of the best pooled out-of-fold score (``lockstep.py``)."""
    from tqdm.auto import tqdm

    from ..engine.lockstep import CommonEpoch, Lane, run_in_lockstep

    cfg, task = trainer.cfg, trainer.task
    lanes, starts, outputs = [], [], []
    for m in group:
        model = build(m)
        _announce(trainer, m, n)
        member_cfg = dataclasses.replace(cfg, seed=m.seed)
        weights = sample_weights(m)
        model, result.aligned, ta, tp, twin = trainer.start(model, (x_all[m.train], y_all[m.train]),
                                               _member_log(log, m), None, None, weights, member_cfg)
        result.t_align, result.t_refine = result.t_align + ta, result.t_refine + tp
        outputs.append(ValidationOutputs())
        stage, state, cbs = refine_setup(
            model, task, (x_all[m.train], y_all[m.train]), (x_all[m.val], y_all[m.val]),
            trainer.y_user[m.val], member_cfg, trainer.accelerator, _member_log(log, m),
            progress=False, weights=weights, callbacks=[*trainer.callbacks, outputs[-1]],
            select=False)
        lanes.append(Lane(stage, state, CallbackList(cbs), trainer.y_user[m.val], y_all[m.val],
                          None if pooled_weight is None else pooled_weight[m.val]))  # RNG: now
        starts.append((model, twin, member_cfg))
    selection = CommonEpoch(task, lanes, trainer.accelerator, cfg.patience)
    bar = tqdm(total=cfg.epochs, desc=f"refine, {len(group)} folds side by side",
               disable=not (trainer.progress and trainer.accelerator.is_main_process), leave=False)
    t0 = time.perf_counter()
    half = max(1, cfg.batch_size // 2)
    with memory_advice("refine", cfg.batch_size, fix=f"the {len(group)} fold models train side by "
                       f"side: try --fold-epoch own (one at a time) or --batch-size {half}"):
        run_in_lockstep(lanes, trainer.accelerator, selection, bar)
    bar.close()
    result.t_refine += time.perf_counter() - t0
    result.common_epochs[group[0].seed] = selection.best_epoch
    for m, lane, (model, twin, member_cfg), out in zip(group, lanes, starts, outputs):
        _finish_member(trainer, m, trainer.end(model, twin, member_cfg), lane.state, x_all,
                       out.per_epoch, result)
    trainer.release([lane.state for lane in lanes])


def refit_members(trainer: MemberTrainer, common_epochs: dict[int, int], first_index: int,
                  build: Callable[[Member], Any], x_all: np.ndarray, y_all: np.ndarray,
                  weights: tuple[np.ndarray, np.ndarray] | None, log: Any) -> MembersResult:
    """``--refit``: per seed, one model trained on all training data (no holdout) for the
    epochs its folds chose together (``common_epochs``: seed -> epoch), on the same schedule
    (the run's ``--epochs`` span it, so epoch e is trained as the folds' epoch e was). The fold
    models' out-of-fold score is the estimate of these models; nothing is scored here."""
    cfg = trainer.cfg
    result = MembersResult()
    everyone, nobody = np.arange(len(y_all)), np.arange(0)
    for i, (seed, epochs) in enumerate(common_epochs.items()):
        m = Member(first_index + i, seed, everyone, nobody)
        model = build(m)
        if trainer.progress:
            print(f"--refit: seed {seed}, all {len(y_all)} training samples, {epochs} epochs",
                  file=sys.stderr)
        model, state, result.aligned, ta, tf = trainer.train(
            model, (x_all, y_all), (x_all[nobody], y_all[nobody]), nobody,
            _member_log(log, m, refit=True), None, None, weights, dataclasses.replace(cfg, seed=seed),
            refine_callbacks=[StopAfter(epochs)], select=False)
        state.best_epoch = state.epoch  # the last epoch is the one kept
        result.t_align, result.t_refine = result.t_align + ta, result.t_refine + tf
        result.fitted.append(model)
        result.states.append(state)
        result.rows.append({**m.describe(), "refit": True, "best_epoch": state.epoch,
                            "epochs_run": state.epoch})
    return result
