"""Experiment trackers (``--report-to none|tensorboard|mlflow``, a comma list): a callback in
the one training loop that sends each epoch's record (the stage, epoch and metrics that
``metrics.jsonl`` holds) to the trackers people already run. Main process only; each tracker
is an optional extra (``pip install 'transmodal[tensorboard]'`` / ``'transmodal[mlflow]'``).

- ``tensorboard``: event files in ``RUN/tensorboard/``; tag ``STAGE/METRIC`` at step = the
  stage's epoch (``tensorboard --logdir RUN/tensorboard``).
- ``mlflow``: a run in experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``transmodal``) of the
  store ``$MLFLOW_TRACKING_URI`` (default ``sqlite:///RUN/mlflow.db``: MLflow 3 wants a
  database store); the resolved options as parameters, metrics ``STAGE/METRIC`` per epoch,
  the final validation and test scores as ``final/val/METRIC`` and ``final/test/METRIC``.

Resume (``fit --resume RUN``) continues the same tracker run: the same TensorBoard folder
(a new event file beside the first; steps go on), the same MLflow run (its id is kept in
``RUN/trackers.json``). An epoch is sent once a checkpoint holds it (at once when the run
keeps no checkpoints): epochs trained after the last checkpoint are redone by a resume, and a
tracker cannot take back what it was sent, so they are sent once, by the run that checkpoints
them. ``trackers.json`` counts the records each tracker was sent; a resume first sends the
checkpoint's records that a tracker lacks (all of them for a tracker added at the resume).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..run.folder import atomic_write_text
from .callbacks import Callback
from .loop import EpochEnd, LoopState, Stage

TRACKERS = ("tensorboard", "mlflow")
EXTRA_MODULE = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
NOT_METRICS = ("stage", "epoch")  # the record's keys that are not metrics (the step is the epoch)
STATE_FILE = "trackers.json"  # per tracker: records sent, and MLflow's run id (for a resume)


def parse_report_to(value: str | None) -> list[str]:
    """``"none"`` -> [], ``"tensorboard,mlflow"`` -> both; unknown names: one ConfigError."""
    names = [n.strip() for n in str(value or "none").split(",") if n.strip()]
    if names == ["none"] or not names:
        return []
    bad = [n for n in names if n not in TRACKERS]
    if bad or "none" in names:
        raise ConfigError(f"unknown --report-to {value!r}; use none, or a comma list of "
                          f"{', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def check_installed(names: list[str]) -> None:
    for name in names:
        if importlib.util.find_spec(EXTRA_MODULE[name]) is None:
            raise ConfigError(f"--report-to {name}: the {name} package is not installed; "
                              f"pip install 'transmodal[{name}]' (or drop --report-to {name})")


def tracker_callbacks(report_to: str | None, run_dir: Path | None, config: dict[str, Any],
                      main_process: bool = True, resume_metrics: str | None = None
                      ) -> list["Tracker"]:
    """The trackers of a fit (checked now: before any run folder is written).
    ``resume_metrics``: the text of ``metrics.jsonl`` in the checkpoint a resume starts from."""
    names = parse_report_to(report_to)
    check_installed(names)
    if names and run_dir is None and not (names == ["mlflow"] and os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError(f"--report-to {report_to} writes into the run folder: pass --out RUN "
                          "(for mlflow alone, or set MLFLOW_TRACKING_URI)")
    if not main_process:
        return []
    kinds = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}
    return [kinds[n](run_dir, config, resume_metrics) for n in names]


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker(Callback):
    """Opened at the first stage, closed by ``finish`` (fit's end). Set ``checkpointer`` (fit
    does) to send each epoch once a checkpoint holds it."""

    name = ""

    def __init__(self, run_dir: Path | None, config: dict[str, Any],
                 resume_metrics: str | None = None) -> None:
        self.run_dir, self.config, self.opened = run_dir, config, False
        self.checkpointer: Any = None
        self.pending: list[dict[str, Any]] = []  # records no checkpoint holds yet
        self.resumed = None if resume_metrics is None else [
            json.loads(line) for line in resume_metrics.splitlines() if line.strip()]
        self.sent = 0

    def on_stage_begin(self, stage: Stage, state: LoopState, start: int) -> None:
        if not self.opened:
            self.open()
            self.opened = True
            if self.resumed is not None:  # what the checkpoint holds and this tracker lacks
                self.sent = min(self.sent, len(self.resumed))
                self.pending = self.resumed[self.sent:]
                self.flush()

    def on_epoch_end(self, stage: Stage, state: LoopState, end: EpochEnd) -> None:
        self.pending.append(end.record)
        # runs after the Checkpoint callback (standard_callbacks puts trackers last)
        if self.checkpointer is None or self.checkpointer.last == (stage.name, state.epoch):
            self.flush()

    def flush(self) -> None:
        """Send the pending records and count them in ``trackers.json``."""
        for record in self.pending:
            self.log(record["stage"], int(record["epoch"]), _numbers(record))
        self.sent += len(self.pending)
        if self.pending:
            self.save_state()
        self.pending = []

    # ------------------------------------------------------------ RUN/trackers.json
    def load_state(self) -> dict[str, Any]:
        """This tracker's entry in ``trackers.json`` (empty for a new run)."""
        path = None if self.run_dir is None else self.run_dir / STATE_FILE
        if self.resumed is None or path is None or not path.exists():
            return {}
        return json.loads(path.read_text()).get(self.name, {})

    def save_state(self, **extra: Any) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / STATE_FILE
        states = json.loads(path.read_text()) if path.exists() else {}
        states[self.name] = {**states.get(self.name, {}), **extra, "sent": self.sent}
        atomic_write_text(path, json.dumps(states, indent=1))

    def open(self) -> None: ...

    def log(self, stage: str, epoch: int, metrics: dict[str, float]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.sent = int(self.load_state().get("sent", 0))
        # a resume: a new event file in the same folder, which TensorBoard reads as one run
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def log(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"{stage}/{key}", value, global_step=epoch)
        self.writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        if self.opened:
            self.writer.close()


class MLflowTracker(Tracker):
    name = "mlflow"

    def open(self) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        state = self.load_state()
        if state.get("run_id"):  # a resume: the same run (its parameters were logged then)
            self.run_id, self.sent = state["run_id"], int(state.get("sent", 0))
            self._reopen(uri)
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "transmodal")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        run_name = self.run_dir.name if self.run_dir is not None else None
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in self.config.items()]
        self.client.log_batch(self.run_id, params=params)
        self.save_state(run_id=self.run_id)

    def _reopen(self, uri: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(self.run_id)
        except MlflowException:
            store = "of $MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else uri
            raise ConfigError(f"--resume: the MLflow run {self.run_id} (RUN/{STATE_FILE}) is not in "
                              f"the store {store}; set MLFLOW_TRACKING_URI to the store the run "
                              "started with") from None
        if run.info.status != "RUNNING":
            self.client.update_run(self.run_id, status="RUNNING")

    def log(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{stage}/{k}", v, now, epoch)
                                                    for k, v in metrics.items()])

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.opened:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = [Metric(f"final/{split}/{k}", float(v), now, 0)
                 for split, scores in summary.get("metrics", {}).items() for k, v in scores.items()]
        if final:
            self.client.log_batch(self.run_id, metrics=final)
        self.client.set_terminated(self.run_id, "FINISHED")
