"""``Run``: a fitted model with its preprocessing (what ``fit`` returns), and ``load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FitConfig
from ..data import Preprocessor, as_inputs
from ..data.columns import frame_inputs, is_frame
from ..data.stream import DiskArray, as_disk
from ..engine.loop import predict_outputs
from ..engine.optim import make_accelerator, memory_advice, step_work
from ..errors import ConfigError, DataError
from ..models import TransmodalModel, load_model, save_model
from ..models.model import cpu_copy
from .folder import RunFolder


class Run:
    """A fitted model with its preprocessing; predicts on raw user inputs."""

    def __init__(self, model: TransmodalModel, preprocessor: Preprocessor,
                 config: FitConfig, summary: dict[str, Any], path: Path | None = None,
                 members: list[TransmodalModel] | None = None, rival: Any = None,
                 model_weight: float = 1.0) -> None:
        """``members``: every trained model (``--folds``/``--ensemble``; default ``[model]``),
        averaged; ``rival``: a baseline kept by ``--method auto`` (run/rival.py), mixed in with
        weight ``1 - model_weight``."""
        self.model = model  # the first member: what single-model features (zero-shot, merge) use
        self.members = list(members) if members else [model]
        self.rival = rival
        self.model_weight = float(model_weight) if rival is not None else 1.0
        self.preprocessor = preprocessor
        self.config = config
        self.summary = summary
        self.path = path
        self._accelerator = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (joblib, scikit-learn) without the accelerator: it holds weak references and
        the training-time state; ``_outputs`` builds a fresh one on the first prediction.
        Models on a GPU are pickled as CPU copies, so a machine without one can unpickle them
        (the first prediction moves them to the run's device when it has it)."""
        state = {**self.__dict__, "_accelerator": None}
        if any(p.device.type != "cpu" for m in self.members for p in m.parameters()):
            members = [cpu_copy(m) for m in self.members]
            state.update(members=members, model=members[0])  # the model is the first member
        return state

    @property
    def task(self) -> str:
        return self.preprocessor.task

    @property
    def classes(self) -> list[Any]:
        """Class labels (classification runs; empty otherwise)."""
        return list(getattr(self.preprocessor.target, "classes", []))

    def _inputs(self, x: Any) -> np.ndarray:
        """Raw user inputs as checked (N, C, *spatial) arrays (the variable-length rule applied).
        A pandas DataFrame's columns are matched to the training columns by name (a model
        fitted on a table knows them); its label and id columns are left out."""
        if is_frame(x):
            x = frame_inputs(x, self.preprocessor.feature_names, "input",
                             drop=(self.config.label_column, self.config.id_column,
                                   self.config.text_column))
        target = self.preprocessor.input_shape[-1] if self.preprocessor.variable_length else None
        arr, _ = as_inputs(x, target_length=target)
        if len(arr) == 0:
            raise DataError("the input has no samples (0 rows); give at least one")
        if not np.isfinite(arr).all():
            raise DataError("input contains NaN or inf; fill or drop those values first")
        return arr

    def _device(self):
        """The accelerator to predict with (the model moved to its device once)."""
        if self._accelerator is None:
            cfg = self.config  # 'auto' resolves as in training: same model, batch and tokens
            device = cfg.device  # a model trained on a GPU predicts on a machine without one
            if device.startswith("cuda") and not torch.cuda.is_available():
                device = "cpu"
            precision = cfg.precision
            on_cpu = device == "cpu" or not torch.cuda.is_available()
            fitted_on_gpu = not str(self.summary.get("device", "cpu")).startswith("cpu")
            if precision == "bf16" and on_cpu and fitted_on_gpu:
                precision = "fp32"  # GPU bf16 fitted, predicted on a CPU: CPU bf16 is slow and
                # the weights are float32 anyway (bf16 was autocast)
            self._accelerator, _ = make_accelerator(device, precision,
                                                    step_work(self.model, cfg.batch_size, cfg.max_tokens))
            for m in self.members:
                m.to(self._accelerator.device)
        return self._accelerator

    def _member_outputs(self, arr: np.ndarray) -> list[np.ndarray]:
        """Each member's raw outputs for checked inputs."""
        self._device()
        batch = self.config.batch_size * 2
        x = self.preprocessor.transform_x(arr)
        with memory_advice("predict", batch, fix="the model itself may not fit this device: "
                           "predict on a device with more memory (--device cpu)"):
            return [predict_outputs(m, x, batch, self._accelerator) for m in self.members]

    def _outputs(self, arr: np.ndarray) -> np.ndarray:
        """Raw outputs for checked inputs (from ``_inputs``): the model's, or the members'
        mixed (probabilities averaged), and the rival's with its weight (``--method auto``)."""
        outs = self._member_outputs(arr)
        return self._mix(outs, None if self.rival is None else self.rival.outputs(arr))

    def _mix(self, outs: list[np.ndarray], rival_out: np.ndarray | None) -> np.ndarray:
        """The members' raw outputs (sharing ``model_weight`` equally) and the rival's (the rest)
        as one raw output; a single model alone is returned as it is."""
        if len(outs) == 1 and rival_out is None:
            return outs[0]
        weights = [self.model_weight / len(outs)] * len(outs)
        if rival_out is not None:
            outs, weights = [*outs, rival_out], [*weights, 1.0 - self.model_weight]
        return self.preprocessor.target.mix(outs, weights)

    def scores_and_parts(self, x: Any, y: Any) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The run's scores on (x, y), and each part's alone: the transformer members mixed
        (``model``), each member, and the rival; the parts are for the user's information
        (nothing is chosen on them). Every member predicts ``x`` once."""
        task = self.preprocessor.target
        arr = self._inputs(x)
        y = np.asarray(y)
        outs = self._member_outputs(arr)
        rival_out = None if self.rival is None else self.rival.outputs(arr)
        parts = {"model": task.score(y, task.decode(task.mix(outs, [1.0 / len(outs)] * len(outs))))}
        if len(outs) > 1:
            for i, o in enumerate(outs):
                parts[f"member_{i}"] = task.score(y, task.decode(o))
        if rival_out is not None:
            parts[self.rival.name] = task.score(y, task.decode(rival_out))
        return task.score(y, task.decode(self._mix(outs, rival_out))), parts

    def save_models(self, folder: Path | None = None) -> None:
        """Write the model(s) into the run folder: ``model/`` (the first member), and for
        several members or a rival ``members/K/``, ``rival/`` and ``ensemble.json``."""
        import json

        folder = RunFolder(Path(folder) if folder is not None else self.path)
        meta = {"preprocessor": self.preprocessor.to_dict(), "config": self.config.to_dict()}
        save_model(self.members[0], folder.model_dir, meta)
        if len(self.members) == 1 and self.rival is None:
            return
        names = ["model"]
        for i, m in enumerate(self.members[1:], start=1):
            names.append(f"members/{i}")
            save_model(m, folder.path / names[-1], meta)
        if self.rival is not None:
            self.rival.save(folder.path / "rival")
        (folder.path / "ensemble.json").write_text(json.dumps({
            "members": names, "model_weight": self.model_weight,
            "rival": None if self.rival is None else "rival"}, indent=1))

    def _raw(self, x: Any) -> np.ndarray:
        """Raw outputs for raw inputs; inputs on disk (a DiskArray, a ``np.memmap``) are read,
        checked and normalised one batch at a time (``data/stream.py``), never whole."""
        if not isinstance(x, (np.memmap, DiskArray)):
            return self._outputs(self._inputs(x))
        view = as_disk(x)
        if len(view) == 0:
            raise DataError("the input has no samples (0 rows); give at least one")
        self.preprocessor.check_x_shape(view)
        self._device()
        batch = self.config.batch_size * 2
        normalised = view.map(lambda a: self.preprocessor.transform_x(self._inputs(a), overwrite=True))
        with memory_advice("predict", batch, fix="the model itself may not fit this device: "
                           "predict on a device with more memory (--device cpu)"):
            outs = [predict_outputs(m, normalised, batch, self._accelerator) for m in self.members]
        rival_out = None if self.rival is None else np.concatenate(  # raw rows, a chunk at a time
            [self.rival.outputs(self._inputs(chunk)) for _, chunk in view.chunks()])
        return self._mix(outs, rival_out)

    def predict(self, x: Any) -> np.ndarray:
        """Labels (classification) or values in the training targets' units."""
        return self.preprocessor.inverse_y(self._raw(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (N, K), columns in the order of ``classes``."""
        return self.preprocessor.target.probabilities(self._raw(x))

    def evaluate(self, x: Any, y: Any) -> dict[str, float]:
        """The task's scores of predictions on ``x`` against labels ``y`` (a run fitted on a
        caption per sample: ``y`` are the captions of ``x``, scored by retrieval recall@k)."""
        y = np.asarray(y)
        target = self.preprocessor.target
        on_disk = isinstance(x, (np.memmap, DiskArray))
        arr = as_disk(x) if on_disk else self._inputs(x)
        target.check_eval_targets(arr, y)  # e.g. labels the model never saw: clear error
        if len(y) != len(arr):
            raise DataError(f"x has {len(arr)} samples but y has {len(y)}; they must match")
        self._device()
        with target.scoring(self.model, y):
            raw = self._raw(arr) if on_disk else self._outputs(arr)
        return target.score_outputs(y, raw)

    # ------------------------------------------------------------------ language (contrastive runs)
    def _contrastive_head(self):
        head = self.model.head
        if not hasattr(head, "text_embeddings"):
            raise ConfigError(f"zero-shot prediction, retrieval and embeddings need a contrastive run "
                              f"(fit --objective contrastive); this run's task is {self.task}")
        return head

    def embed(self, x: Any) -> np.ndarray:
        """L2-normalised target-tower embeddings (N, E) of raw inputs ``x``."""
        import torch

        head = self._contrastive_head()
        x_in = self.preprocessor.transform_x(self._inputs(x))
        batch, acc = self.config.batch_size * 2, self._device()
        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x_in), batch):
                xb = torch.from_numpy(x_in[i: i + batch]).to(acc.device)
                with acc.autocast():
                    hidden, _ = self.model.features(xb)
                    out.append(head.embed(hidden).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, head.proj.out_features), np.float32)

    def embed_text(self, texts: Any) -> np.ndarray:
        """L2-normalised text-tower embeddings (N, E) of sentences."""
        import torch

        head = self._contrastive_head()
        texts = _check_texts(texts, "texts")
        self._device()
        self.model.eval()
        with torch.no_grad():
            return head.text_embeddings([[t] for t in texts]).float().cpu().numpy()

    def zero_shot_proba(self, x: Any, labels: Any, templates: Any = None) -> np.ndarray:
        """(N, K) probabilities over ``labels`` (words never trained on are fine): each label
        through the prompt templates (default: the run's own), averaged (a prompt ensemble)."""
        import torch

        from ..tasks.contrastive import check_templates, fill_templates

        head = self._contrastive_head()
        labels = _check_texts(labels, "labels", unique=True)
        if templates is None:
            templates = (self.model.spec.text or {}).get("templates") or ["{}"]
        templates = [templates] if isinstance(templates, str) else list(templates)
        check_templates(templates)
        z = torch.from_numpy(self.embed(x))  # (N, E)
        self.model.eval()
        with torch.no_grad():
            t = head.text_embeddings([fill_templates(templates, lab) for lab in labels]).float().cpu()
            logits = head.scale().detach().float().cpu() * z @ t.T  # (N, K)
        return torch.softmax(logits, dim=1).numpy()

    def zero_shot(self, x: Any, labels: Any, templates: Any = None) -> np.ndarray:
        """The most likely of ``labels`` for each sample (N,)."""
        labels = _check_texts(labels, "labels", unique=True)
        return np.asarray(labels, dtype=object)[self.zero_shot_proba(x, labels, templates).argmax(1)]

    def retrieve(self, x: Any, query: str, top_k: int = 5) -> list[tuple[int, float]]:
        """The ``top_k`` samples of ``x`` closest to the text ``query``: (index, cosine), best first."""
        if int(top_k) < 1:
            raise ConfigError("--top-k must be at least 1")
        z = self.embed(x)  # (N, E)
        q = self.embed_text([query])[0]  # (E,)
        sims = z @ q
        order = np.argsort(-sims, kind="stable")[: int(top_k)]
        return [(int(i), float(sims[i])) for i in order]

    def merge(self, out: str | Path | None = None) -> "Run":
        """A ``--tune lora`` run with its adapters folded into the base weights.

        Returns a new Run holding a plain model (the same predictions, no adapters, no base-body
        reference, no peft needed to load it). It is written as a normal model folder to ``out``,
        by default ``RUN/model_merged/`` when this run has a folder; ``transmodal.load`` reads it.
        """
        from ..models.tuning import merge_lora

        if not getattr(self.model.spec, "lora", None):
            raise ConfigError("only --tune lora runs have adapters to merge")
        if len(self.members) > 1 or self.rival is not None:
            raise ConfigError("merge writes one model folder; this run holds several models "
                              "(--folds/--ensemble/--method auto): its run folder is what to load")
        model = merge_lora(cpu_copy(self.model))
        target = Path(out) if out is not None else (self.path / "model_merged" if self.path else None)
        if target is not None:
            save_model(model, target, {"preprocessor": self.preprocessor.to_dict(),
                                       "config": self.config.to_dict()})
        return Run(model, self.preprocessor, self.config, dict(self.summary), target)



def _check_texts(texts: Any, what: str, unique: bool = False) -> list[str]:
    """A non-empty list of non-empty strings (``unique``: no label twice)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = [str(t) for t in texts]
    if not texts:
        raise DataError(f"no {what} given; give at least one")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{what} number {empty[0] + 1} is empty; every one needs words")
    if unique and len(set(texts)) < len(texts):
        twice = sorted({t for t in texts if texts.count(t) > 1})
        raise DataError(f"{what} {twice[:5]} are given more than once; give each once")
    return texts


def load(run_dir: str | Path) -> Run:
    """Load a finished run folder (safetensors + JSON; nothing is unpickled), or a model folder
    such as ``RUN/model_merged`` (its summary is then empty). A run fitted on several tasks
    loads as a ``MultiTaskRun`` (predictions then name their task)."""
    from ..models.multitask import is_multitask_folder

    if is_multitask_folder(Path(run_dir)) or is_multitask_folder(RunFolder(Path(run_dir)).model_dir):
        from .multitask import load_multitask_run

        return load_multitask_run(Path(run_dir))
    if (Path(run_dir) / "model.json").is_file():  # a model folder: it carries its preprocessing
        model, meta = load_model(Path(run_dir))
        return Run(model, Preprocessor.from_dict(meta["preprocessor"]),
                   FitConfig.from_dict(meta["config"]), {}, Path(run_dir))
    folder = RunFolder(Path(run_dir))
    summary = folder.read_summary()
    model, meta = load_model(folder.model_dir)
    pre = Preprocessor.from_dict(meta["preprocessor"])
    cfg = FitConfig.from_dict(meta["config"])
    members, rival, weight = [model], None, 1.0
    if (folder.path / "ensemble.json").is_file():  # --folds / --ensemble / --method auto
        import json

        from .rival import Rival

        plan = json.loads((folder.path / "ensemble.json").read_text())
        members += [load_model(folder.path / name)[0] for name in plan["members"][1:]]
        if plan.get("rival"):
            rival = Rival.load(folder.path / plan["rival"])
        weight = float(plan["model_weight"])
    return Run(model, pre, cfg, summary, folder.path, members=members, rival=rival,
               model_weight=weight)


