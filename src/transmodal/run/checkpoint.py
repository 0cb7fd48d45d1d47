"""Resumable checkpoints: written atomically, read without unpickling anything.

One file per run, the last good checkpoint::

    RUN/checkpoint/checkpoint.pt       torch.save of tensors and plain Python values only
    RUN/checkpoint/checkpoint.pt.tmp   exists only while a new checkpoint is being written

A new checkpoint is written to the ``.tmp`` file, flushed to disk (fsync), then renamed over
the old one with ``os.replace`` (atomic on POSIX and Windows), so a crash or a full disk in
the middle of a write leaves the previous checkpoint loadable. It is read with
``torch.load(path, weights_only=True)``: a pickle renamed as a checkpoint is refused, never
executed.

Format ``transmodal-checkpoint/1`` (a dict):

=============  ===========================================================================
format         ``"transmodal-checkpoint/1"``
stage          the stage that wrote it: ``"align"`` or ``"refine"`` (see ``STAGES``)
epoch, step    epochs and optimizer steps of that stage completed
done           True when the stage is finished (last epoch or early stop)
model          ``state_dict`` of the whole model (embedder + body + head)
best_model     ``state_dict`` of the best weights so far; None when they equal ``model``
optimizer      ``optimizer.state_dict()`` of the stage's optimizer
scheduler      ``scheduler.state_dict()`` or None
scaler         grad scaler ``state_dict()`` (fp16) or None
state          plain dict of the stage's loop state (best epoch and scores, early-stopping
               counter, metric history, skipped batches, ...), owned by the stage
rng            Python ``random``, numpy, torch CPU and CUDA states, and the state of every
               named ``torch.Generator`` the stage uses (e.g. the DataLoader's shuffling)
metrics        the text of ``RUN/metrics.jsonl`` when the checkpoint was written; a resume
               rewrites the file with it, so epochs logged after the checkpoint are dropped
               (and logged again) instead of duplicated
fingerprint    hash of the data (see :func:`data_fingerprint`); a resume refuses other data
processes      how many processes trained (absent before: 1); a resume needs as many
sharded        True when the stage's model was sharded (``--distributed fsdp``): ``model`` and
               ``best_model`` are still full state dicts, ``optimizer`` is torch DCP's full
               optimizer state (keyed by parameter names); absent before: False
=============  ===========================================================================

Under ``--distributed fsdp`` every rank holds a Checkpointer (``collective=True``; only the
main process's ``writes``): the main process decides when a checkpoint is due, all ranks
gather the sharded state, the main process writes it.

API (stage-generic; the one training loop, ``engine/loop.py``, uses it through its checkpoint
callback, ``engine/callbacks.py``)::

    ck = Checkpointer(run_dir, every=cfg.checkpoint_every, fingerprint=data_fingerprint(...))
    # every=N: at the end of every N-th epoch; every=0 (default): automatic, the first epoch,
    # then whenever training since the last write took >= AUTO_RATIO x that write's time
    # at the end of each epoch, after logging the epoch's metrics:
    if ck.due(epoch, last):
        ck.save(stage="align", epoch=epoch, step=step, model=model, optimizer=opt,
                scheduler=None, generators={"loader": gen}, state={...}, done=last)
    # resuming (run.py): the last checkpoint, or None if the run has none
    resume = ck.load()
    if resume is not None and resume["stage"] == "align":
        restore(resume, model=model, optimizer=opt, generators={"loader": gen})
        start_epoch, state = resume["epoch"], resume["state"]

``restore`` must run after everything that draws random numbers while setting the stage up
(model building, optimizer, DataLoader): it puts back the RNG states last. A stage that is
not the checkpoint's own stage comes before it (skip it: its result is in ``model``) or
after it (start it fresh once the checkpoint's stage has been resumed and finished).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..engine.lockstep import set_torch_rng_state, torch_rng_state
from ..errors import CheckpointError

FORMAT = "transmodal-checkpoint/1"
STAGES = ("align", "refine")  # in the order a run goes through them
DIRNAME = "checkpoint"
FILENAME = "checkpoint.pt"
AUTO_RATIO = 20  # every=0: train >= 20x as long as the last write took (<= ~5% overhead)


# ----------------------------------------------------------------------------- files


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: temporary file, fsync, ``os.replace``.

    On any failure the temporary file is removed and the previous checkpoint is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            _serialize(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint was kept"
            raise CheckpointError(
                f"could not write checkpoint {path} ({_one_line(e)}); {kept}. Free disk space "
                "(or fix the folder's permissions), then resume with --resume RUN"
            ) from e
        raise


def _serialize(payload: dict[str, Any], f: io.BufferedIOBase) -> None:
    torch.save(payload, f)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain values; no code runs)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
            AttributeError, TypeError) as e:
        raise CheckpointError(
            f"{path} is not a readable transmodal checkpoint ({type(e).__name__}: it is "
            "truncated, damaged, or not a checkpoint; it was not unpickled). Start the run again "
            "with --overwrite"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: format {found!r} is not {FORMAT!r}; not a transmodal checkpoint")
    if ckpt.get("stage") not in STAGES:
        raise CheckpointError(f"{path}: unknown stage {ckpt.get('stage')!r}; the file is damaged")
    return ckpt


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ----------------------------------------------------------------------------- RNG


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG that training draws from, as tensors and plain values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cpu, cuda = torch_rng_state()  # CUDA's only once it is in use
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": cpu,
        "cuda": cuda or [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda") or None
    if cuda is not None and len(cuda) != torch.cuda.device_count():
        cuda = None  # another machine's GPUs: their generators cannot be matched one to one
    set_torch_rng_state((state["torch"], cuda))
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"the checkpoint has no state for the random generator {name!r}; "
                                  "it was written by another version of transmodal")
        try:
            g.set_state(saved[name])
        except RuntimeError:  # e.g. --augment's generator lives on the device: CPU vs CUDA state
            raise CheckpointError(f"the checkpoint's random generator {name!r} was saved on "
                                  f"another device type than {g.device.type}; resume with the "
                                  "run's own --device") from None


# ----------------------------------------------------------------------------- payload


def plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> Python values, so ``weights_only`` loading reads them."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def data_fingerprint(*arrays: Any) -> str:
    """A short hash of the data (shapes, dtypes, values); None entries are skipped."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        if hasattr(a, "chunks"):  # on disk (data/stream.py): the same hash, read chunk by chunk
            h.update(f"{a.shape}{a.dtype.str}".encode())
            for _, chunk in a.chunks():
                h.update(memoryview(np.ascontiguousarray(chunk)).cast("B"))
            continue
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(repr(a.tolist()).encode() if a.dtype.kind == "O" else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


def check_architecture(state: Mapping[str, torch.Tensor], model: torch.nn.Module, where: str) -> None:
    """Refuse weights of another architecture with one line (instead of a long torch error)."""
    from ..models.model import architecture_mismatch

    mismatch = architecture_mismatch(model.state_dict(), dict(state))
    if mismatch:
        raise CheckpointError(
            f"{where} holds weights of another architecture ({mismatch}); "
            "it does not belong to this run: start the run again with --overwrite"
        )


def restore(ckpt: Mapping[str, Any], *, model: torch.nn.Module, optimizer=None, scheduler=None,
            scaler=None, generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Put model, optimizer, scheduler, scaler and all RNG states back as they were saved."""
    from ..engine.distributed import is_sharded

    model = _unwrapped(model)
    check_architecture(ckpt["model"], model, f"checkpoint (stage {ckpt['stage']})")
    sharded = is_sharded(model)
    if sharded != bool(ckpt.get("sharded", False)):
        raise CheckpointError(
            f"the checkpoint (stage {ckpt['stage']}) was written by a "
            f"{'sharded' if ckpt.get('sharded') else 'whole'} model and this run's model is "
            f"{'sharded' if sharded else 'whole'}; resume with the run's own --distributed")
    if not sharded:
        model.load_state_dict(ckpt["model"])
    try:
        if sharded:
            from ..engine.distributed import load_training_state

            load_training_state(model, optimizer, ckpt)
        elif optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"the checkpoint's optimizer state does not fit this run ({_one_line(e)}); it was "
            "written with other options: start the run again with --overwrite"
        ) from None
    set_rng_state(ckpt["rng"], generators)


class Checkpointer:
    """Writes and reads ``RUN/checkpoint/checkpoint.pt`` for every stage of one run."""

    def __init__(self, run_dir: str | Path, every: int = 0, fingerprint: str = "",
                 processes: int = 1, collective: bool = False, writes: bool = True) -> None:
        """``collective``: every rank holds one and calls ``due``/``save`` together (sharded
        models); ``writes``: this one writes the file (the main process)."""
        self.run_dir = Path(run_dir)
        self.collective, self.writes = collective, writes
        self.processes = int(processes)  # a resume must have as many (engine/distributed.py)
        self.every = max(0, int(every))  # 0: automatic
        self.fingerprint = fingerprint
        self.last: tuple[str, int] | None = None  # (stage, epoch) of the last good checkpoint
        self._write_seconds = 0.0  # how long the last write took
        self._written_at: float | None = None  # when it ended (perf_counter)

    @property
    def path(self) -> Path:
        return self.run_dir / DIRNAME / FILENAME

    def due(self, epoch: int, last: bool = False) -> bool:
        """Every ``every`` epochs (automatic when 0), and always at the end of a stage.

        Where checkpoints fall never changes the results: a resume from any of them is exact.
        ``collective``: the main process's answer on every rank.
        """
        if self.collective:
            from ..engine.distributed import agree

            return agree(self._due(epoch, last) if self.writes else False)
        return self._due(epoch, last)

    def _due(self, epoch: int, last: bool) -> bool:
        if last:
            return True
        if self.every > 0:
            return epoch % self.every == 0
        if self._written_at is None:
            return True
        return time.perf_counter() - self._written_at >= AUTO_RATIO * self._write_seconds

    def describe_last(self) -> str:
        """For error messages: where the last good state is."""
        if self.last is None:
            if self.exists():  # written by the process this run resumed from
                return f"the last good checkpoint is kept in {self.path.parent}"
            return "no checkpoint was written yet"
        stage, epoch = self.last
        return f"the last good checkpoint ({stage} epoch {epoch}) is kept in {self.path.parent}"

    def save(self, *, stage: str, epoch: int, step: int, model: torch.nn.Module, optimizer,
             scheduler=None, scaler=None, generators: Mapping[str, torch.Generator] | None = None,
             state: Mapping[str, Any] | None = None,
             best_model: Mapping[str, torch.Tensor] | None = None, done: bool = False) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        from ..engine.distributed import full_training_state, full_weights, is_sharded

        t0 = time.perf_counter()
        model = _unwrapped(model)
        sharded = self.collective and is_sharded(model)
        if sharded:  # collective: every rank gathers, the main process keeps the full state
            weights, optimizer_state = full_training_state(model, optimizer)
            best_model = None if best_model is None else full_weights(best_model, self.writes)
        if not self.writes:
            return
        if not sharded:
            weights, optimizer_state = model.state_dict(), optimizer.state_dict()
        metrics = self.run_dir / "metrics.jsonl"
        payload = {
            "format": FORMAT,
            "stage": stage,
            "epoch": int(epoch),
            "step": int(step),
            "done": bool(done),
            "model": weights,
            "best_model": dict(best_model) if best_model is not None else None,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "state": plain(dict(state or {})),
            "rng": rng_state(generators),
            "metrics": metrics.read_text() if metrics.exists() else "",
            "fingerprint": self.fingerprint,
            "processes": self.processes,
        }
        if sharded:  # absent otherwise: checkpoints of whole models stay as they were
            payload["sharded"] = True
        save(self.path, payload)
        self.last = (stage, int(epoch))
        self._written_at = time.perf_counter()
        self._write_seconds = self._written_at - t0

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when the run has written none."""
        if not self.exists():
            return None
        ckpt = load(self.path)
        self.last = (ckpt["stage"], ckpt["epoch"])
        return ckpt


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP/compile wrappers, so keys match the bare model."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


__all__ = ["Checkpointer", "FORMAT", "STAGES", "save", "load", "restore", "rng_state",
           "set_rng_state", "data_fingerprint", "check_architecture", "plain"]
