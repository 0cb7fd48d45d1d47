"""The run folder: what one ``fit`` leaves on disk.

```
RUN/
  config.yaml      fully resolved options (enough to re-run)
  metrics.jsonl    one JSON line per epoch and stage
  model/           model.safetensors + model.json (no pickle)
  checkpoint/      checkpoint.pt: the last resumable state (see checkpoint.py; no pickle)
  report/          index.html (the run report) and PNG plots
  trackers.json    --report-to: records each tracker was sent, MLflow's run id (for a resume)
  out_of_fold.npz  --folds / --method auto: training targets and every candidate's out-of-fold outputs
  summary.json     final scores and timings; written LAST, so its presence means complete
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import CheckpointError, ConfigError


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def create(self, overwrite: bool = False) -> None:
        """Make an empty run folder; refuse to mix a new run into an old one."""
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise ConfigError(
                    f"run folder {self.path} already exists and is not empty; choose another "
                    "--out or pass --overwrite"
                )
            import shutil

            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def start(self, config: dict[str, Any], overwrite: bool = False) -> None:
        """Create the folder and write config.yaml; a config that cannot be written leaves no
        folder behind."""
        self.create(overwrite=overwrite)
        try:
            self.write_config(config)
        except yaml.YAMLError as e:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
            raise ConfigError(f"the options cannot be recorded in config.yaml ({str(e).splitlines()[0]}); "
                              "give option values as numbers, strings or lists") from None

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_metrics(self, text: str) -> None:
        """Replace metrics.jsonl (a resume rewinds it to its checkpoint's copy)."""
        atomic_write_text(self.path / "metrics.jsonl", text)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Mark the run complete; its resume checkpoint (hundreds of MB) is no longer needed."""
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, default=str))
        import shutil

        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def write_out_of_fold(self, y: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """``out_of_fold.npz`` (``--folds``): the encoded training targets ``y`` and each
        candidate's raw out-of-fold outputs (the transformer's as ``model``; ``--method auto``
        adds its rivals'), so a user can compare them on every training sample."""
        np.savez(self.path / "out_of_fold.npz", y=y, **outputs)

    def read_summary(self) -> dict[str, Any]:
        if not self.summary_path.exists():
            raise CheckpointError(
                f"{self.path} has no summary.json: the run did not finish (or this is not a run "
                "folder); re-run fit or pass a finished run folder"
            )
        try:
            return json.loads(self.summary_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{self.summary_path} is damaged ({e})") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
