"""The Task interface: everything that differs between objectives, behind one small contract.

A task owns its targets from end to end: which labels it accepts, how they are encoded for
training and decoded back into the user's label space, the loss on raw model outputs, the
scores, and the primary metric that chooses the best epoch. The rest of transmodal asks the
task and never compares task names (open_clip keeps losses apart the same way; timm its tasks).

Lifecycle: ``get_task(name)`` gives an unfitted task (enough to check targets, compute a loss
or score predictions); ``fit_targets`` learns what encoding needs from the training targets
(classes, scales), stored with the model as plain JSON (``state`` / ``from_state``).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, ContextManager, Sequence

import numpy as np
import torch

from ..errors import ConfigError


class Task(ABC):
    name: ClassVar[str]  # registry key, the value of --task and of ``summary["task"]``
    head: ClassVar[str]  # registered head (models/heads) that produces this task's raw outputs
    primary: ClassVar[tuple[str, bool]]  # (metric that chooses the best epoch, higher is better)
    infer_rank: ClassVar[int | None] = None  # --task auto asks tasks in this order; None: never
    objective: ClassVar[str] = "supervised"  # the --objective that trains it
    # how reports show predictions against targets: "classes" (confusion matrix), "values"
    # (parity and residuals) or "fields" (example series or images)
    view: ClassVar[str] = "values"
    # what the targets are, for --augment (engine/augment.py): "labels" (any transform; mixes
    # weight the loss), "texts" (no mixes), "values" (jitter only), "fields" (per position:
    # geometric transforms move the target alike)
    augment_targets: ClassVar[str] = "values"
    # (body, embedder and head) learning rates when --lr / --head-lr are not given
    learning_rates: ClassVar[tuple[float, float]] = (1e-4, 1e-3)
    # the token cap when --max-tokens is not given (CPU speed falls fast beyond 64, DESIGN.md)
    max_tokens: ClassVar[int] = 64
    # the batch size when --batch-size is not given
    batch_size: ClassVar[int] = 16
    # the body's hidden dropout when --dropout is not given: a number, or "body" (its own)
    dropout: ClassVar[float | str] = "body"
    # the refine warm-up when --warmup is not given: this fraction of the steps, and at least
    # this many steps (never more than half of them)
    warmup_fraction: ClassVar[float] = 0.1
    min_warmup_steps: ClassVar[int] = 0
    # --embedder when not given, for series longer than the token cap (others: patch);
    # classification measured rocket better (README, "Small data")
    series_embedder: ClassVar[str] = "patch"

    def configure(self, cfg: Any) -> None:
        """Read the task's own fit options (e.g. the texts of a contrastive task)."""

    def with_defaults(self, cfg: Any, spatial: Sequence[int] | None = None,
                      table: bool = False) -> Any:
        """``cfg`` with the options left to the task filled in (the learning rates, the batch
        size, the body's dropout, the token cap and the embedder, for inputs on the grid
        ``spatial``; ``table``: the inputs are a table's columns): what config.yaml records and
        every stage reads."""
        import dataclasses

        body, head = self.learning_rates
        max_tokens = self.token_cap(spatial) if cfg.max_tokens is None else cfg.max_tokens
        return dataclasses.replace(
            cfg, lr=body if cfg.lr is None else cfg.lr,
            head_lr=head if cfg.head_lr is None else cfg.head_lr,
            batch_size=self.batch_size if cfg.batch_size is None else cfg.batch_size,
            dropout=self.dropout if cfg.dropout is None else cfg.dropout,
            max_tokens=max_tokens,
            embedder=(self.default_embedder(cfg.body, spatial, max_tokens, table)
                      if cfg.embedder is None else cfg.embedder))

    def default_embedder(self, body: str, spatial: Sequence[int] | None, max_tokens: int,
                         table: bool) -> str:
        """``--embedder`` when not given: the task's series embedder for series longer than the
        token cap (a patch then holds several steps: ``rocket``'s dilated kernels see shapes
        longer than a patch), ``patch`` otherwise: fields and images, tables (their column
        order means nothing), series of one step per token, pixel bodies (no embedder)."""
        from ..models.bodies import takes_pixels

        series = spatial is not None and len(spatial) == 1 and spatial[0] > max_tokens
        return self.series_embedder if series and not table and not takes_pixels(body) else "patch"

    def token_cap(self, spatial: Sequence[int] | None) -> int:
        """The default token cap for inputs on the grid ``spatial`` (None: not known yet)."""
        return self.max_tokens

    def warmup_rule(self, cfg: Any) -> tuple[float, int]:
        """(fraction, least steps) of the refine warm-up: ``--warmup`` exactly when given, else
        the task's. Resolved when the step count is known (config.yaml keeps ``null``)."""
        if cfg.warmup is not None:
            return float(cfg.warmup), 0
        return self.warmup_fraction, self.min_warmup_steps

    def check_head(self, head: str) -> None:
        """``--head``: ``linear`` is the task's own head; a task that can take another (the
        classification task's ``generate``) says so by overriding this."""
        if head != "linear":
            raise ConfigError(f"--head {head} writes class labels as text: it needs a classification "
                              f"task, and this run's task is {self.name}; use --head linear")

    def spec_extras(self) -> dict[str, Any]:
        """Extra ModelSpec fields the task's head needs to be built (after ``fit_targets``)."""
        return {}

    # ------------------------------------------------------------------ recognising targets
    def matches(self, x: np.ndarray, y: np.ndarray) -> bool:
        """True if ``--task auto`` should pick this task for labels ``y`` of inputs ``x``."""
        return False

    @abstractmethod
    def check_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        """Training targets fit the task (raise DataError with the fix otherwise)."""

    def check_eval_targets(self, x: np.ndarray, y: np.ndarray) -> None:
        """Targets to score a fitted model on (a test split, ``evaluate``) fit it."""

    def stratify(self, y: np.ndarray) -> np.ndarray | None:
        """Labels to stratify the validation split by, or None."""
        return None

    def min_validation(self, y: np.ndarray) -> int:
        """Fewest validation samples that make the validation scores meaningful."""
        return 1

    # ------------------------------------------------------------------ target encoding
    @abstractmethod
    def fit_targets(self, x: np.ndarray, y: np.ndarray) -> "Task":
        """Learn the encoding from the training targets (in place); returns self."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The fitted encoding as JSON-able values (stored in ``model.json``)."""

    @classmethod
    @abstractmethod
    def from_state(cls, d: dict[str, Any]) -> "Task":
        """Rebuild a fitted task; ``d`` is the whole stored preprocessing record."""

    @property
    @abstractmethod
    def n_outputs(self) -> int:
        """Outputs of the head: classes, regression outputs or dense output channels."""

    @abstractmethod
    def encode(self, y: np.ndarray) -> np.ndarray:
        """User labels -> training targets (class ids, standardised values)."""

    @abstractmethod
    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Raw model outputs -> predictions in the user's label space and units."""

    def mix(self, outputs: list[np.ndarray], weights: list[float]) -> np.ndarray:
        """Raw outputs of several models (an ensemble, or a model and a baseline) as one raw
        output that ``decode`` reads: here their weighted mean (values in the training targets'
        standardised units average like the predictions do); tasks with probabilities mix those.
        ``weights`` are non-negative and sum to 1."""
        return sum(w * o.astype(np.float64) for w, o in zip(weights, outputs)).astype(np.float32)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        raise ConfigError(f"predict_proba is for classification runs only (this run: {self.name})")

    # ------------------------------------------------------------------ training and scores
    @abstractmethod
    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of raw outputs against encoded targets (computed in fp32).

        Called with a third argument ``weight`` (per-sample weights, shape (B,), mean 1 over
        the training split) only when the user gave sample weights; a task that takes them
        returns the batch mean of the weighted per-sample losses (:func:`weighted_mean`)."""

    @abstractmethod
    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        """Scores of predictions in label space; the primary metric is one of them.

        Called with ``sample_weight`` (validation weights) only when sample weights were given."""

    def scoring(self, model: Any, y_true: np.ndarray) -> ContextManager[None]:
        """A block inside which the raw outputs of ``model`` (unwrapped) are made for scoring
        against ``y_true`` (validation, test, ``evaluate``). Default: nothing changes. A
        contrastive task with a caption per sample scores the split's own captions, new texts
        the model has to embed (``tasks/contrastive.py``)."""
        return contextlib.nullcontext()

    def training_batch(self, model: Any, target: torch.Tensor) -> ContextManager[torch.Tensor]:
        """A block around one training step's forward pass of ``model`` (unwrapped); it yields
        the targets the loss takes. Default: unchanged. A contrastive task with a caption per
        sample and a trained text encoder embeds only the batch's own captions there."""
        return contextlib.nullcontext(target)

    def score_outputs(self, y_true: np.ndarray, raw: np.ndarray, *weight: np.ndarray) -> dict[str, float]:
        """Scores of raw outputs (made inside :meth:`scoring`); default: of the decoded ones."""
        return self.score(y_true, self.decode(raw), *weight)

    def check_model(self, model: Any, eval_targets: list[np.ndarray | None]) -> None:
        """Checks that need the built model, before a run folder is written (e.g. texts longer
        than a text tower takes); ``eval_targets``: the validation and test targets."""

    def probe(self, feats: np.ndarray, y: np.ndarray, weight: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """A linear read-out fitted on standardised frozen features (N, F) and encoded targets,
        for the head's warm start (``engine/probe.py``): (coef (K, F), intercept (K,), what was
        chosen), or None when the task has none."""
        return None

    def compare(self, new: dict[str, float], best: dict[str, float] | None) -> int:
        """+1 if ``new`` beats ``best`` on the primary metric, 0 on a tie, -1 if worse.

        The refine loop keeps the *later* epoch on a tie (tiny validation sets tie often): over
        the five UCR suite sets x 3 seeds at the suite budgets, "ties go to the later epoch" gave
        test accuracy >= the old "ties go to the lower validation loss" on every set (mean +1.3
        points; ArrowHead +4.0), since a later tied epoch has trained longer at a decayed rate.
        A tie resets early stopping's patience too (the kept epoch is the patience's origin).
        """
        if best is None:
            return 1
        name, higher = self.primary
        a, b = new[name], best[name]
        if a == b:
            return 0
        return 1 if (a > b) == higher else -1

    def alignment_labels(self, target: np.ndarray, k: int, seed: int) -> np.ndarray:
        """Labels for OTDD alignment from encoded targets: k-means clusters of the targets
        (tasks with classes override this with the class ids)."""
        from sklearn.cluster import KMeans

        flat = target.reshape(len(target), -1).astype(np.float64)
        k = max(1, min(k, len(flat) // 2))
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(flat).astype(np.int64)


def weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Batch mean of per-sample losses times their weights: an unreduced loss of shape (B, ...)
    is first averaged over everything but the batch axis. The weights have mean 1 over the
    training split, so a weight of 2 counts a sample twice, in expectation over the batches."""
    per = per_sample.reshape(len(per_sample), -1).mean(1)  # (B,)
    return (per * weight.to(per.dtype)).mean()


def mse(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in fp32 (regression, dense); per-sample weighted when weights are given."""
    from torch.nn import functional as F

    if weight is None:
        return F.mse_loss(out.float(), target)
    return weighted_mean(F.mse_loss(out.float(), target, reduction="none"), weight)
