"""FitConfig: every option of ``fit``, checked once, in one place.

Like PEFT configs: a dataclass whose ``__post_init__`` checks values and combinations and
raises one clear :class:`ConfigError`; unknown keys (from YAML or keyword arguments) are an
error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .align.objectives import alignment_names
from .errors import ConfigError
from .tasks import task_names

TUNE_CHOICES = ("full", "scratch", "frozen", "layernorm", "hybrid:K", "lora")
PRECISION_CHOICES = ("auto", "fp32", "bf16")
DISTRIBUTED_CHOICES = ("ddp", "fsdp")  # engine/distributed.py
OBJECTIVE_CHOICES = ("supervised", "contrastive")
TEXT_TUNE_CHOICES = ("frozen", "lora", "full")
ON_NAN_CHOICES = ("stop", "skip")
SCHEDULE_CHOICES = ("cosine", "constant")
BASELINE_CHOICES = ("none", "fast", "all")
METHOD_CHOICES = ("model", "auto")
FOLD_EPOCH_CHOICES = ("common", "own")
AUTO_FOLDS = 5  # --method auto with --folds 0: the inner cross-validation's fold count
HEAD_CHOICES = ("linear", "generate")
DECODE_CHOICES = ("constrained", "score", "free")
EMBEDDER_CHOICES = ("patch", "overlap", "conv", "rocket")
HEAD_INIT_CHOICES = ("probe", "random")
HEAD_NORM_CHOICES = ("batch", "none")
DENSE_LOSS_CHOICES = ("mse", "rel_l2")  # tasks/dense.py
# what a run written before an option existed did: its config.yaml lacks the key, and a resume
# must rebuild that run, not today's default
BEFORE_OPTION = {"head_norm": "none", "head_init": "random", "dense_loss": "mse",
                 "embedder": "patch"}
# what a null meant in a config.yaml written before the task chose the option's default (today
# config.yaml records the value the task chose, never null)
BEFORE_TASK_DEFAULT = {"dropout": "body"}


def parse_tune(tune: str) -> tuple[str, int | None]:
    """Split ``"hybrid:K"`` into ``("hybrid", K)``; other values give ``(value, None)``."""
    if tune.startswith("hybrid"):
        _, _, k = tune.partition(":")
        if not k.isdigit():
            raise ConfigError(
                f"--tune {tune!r}: hybrid needs the number of frozen blocks, e.g. --tune hybrid:3"
            )
        return "hybrid", int(k)
    if tune not in TUNE_CHOICES:
        raise ConfigError(f"unknown --tune {tune!r}; choose one of {', '.join(TUNE_CHOICES)}")
    return tune, None


def option(default: Any, help: str, *, choices: str | None = None, group: str = "train",
           flag: str | None = None) -> Any:
    """A FitConfig field with its help text: the one place an option is described.

    ``choices`` is shown in the help; ``group`` is "data" for where the data come from (the
    scikit-learn estimators take arrays instead), "run" for run-folder options, else "train".
    The CLI (``cli.py``) and the estimators (``run/estimators.py``) are built from these fields;
    ``flag`` names the command-line option when it is not the field's name (a list field is a
    repeatable option).
    """
    return field(default=default, metadata={"help": help, "choices": choices, "group": group,
                                            "flag": flag})


# declared field types whose values FitConfig coerces from text (``_coerce_numbers``)
NUMBER_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float,
                "float | str | None": float}
# the words a number option also takes (FitConfig field -> words)
NUMBER_WORDS = {"dropout": ("body",)}


@dataclass
class FitConfig:
    """All options of one fit. Defaults are the offline CPU defaults (see DESIGN.md)."""

    data: str | None = option(None, "the data: x.npz, x.csv, ucr:NAME, folder:PATH (images) or a "
                              "folder of .npy files, streamed from disk (README: Data rules)",
                              group="data")
    test_data: str | None = option(None, "separate test set (same formats as --data)", group="data")
    label_column: str = option("label", "CSV label column", group="data")
    id_column: str | None = option(None, "CSV column of sample ids: not a feature; predict "
                                   "writes it beside the predictions", group="data")
    text_column: str | None = option(None, "CSV column of a caption per sample (--objective "
                                     "contrastive): the text each sample is bound to, instead "
                                     "of its label in templates; labels become optional",
                                     group="data")
    task: str = option("auto", "what to predict; auto: inferred from the labels",
                       choices="auto|" + "|".join(task_names("supervised")), group="data")
    body: str = option("minilm", "pretrained body: minilm (offline default), efficientnet-lite0 "
                       "(images), a local model folder or a hub id")
    align: str = option("none", "stage 1 alignment of the embedder to the body's inputs",
                        choices="none|" + "|".join(alignment_names()))
    tune: str = option("full", "what trains in stage 2", choices="|".join(TUNE_CHOICES))
    epochs: int = option(60, "refine epochs")
    align_epochs: int | None = option(None, "align epochs; default 0, or 20 with --align")
    batch_size: int | None = option(None, "batch size; default 16, dense tasks 8")
    # None: the task's own (Task.learning_rates), filled in once the task is known
    lr: float | None = option(None, "body learning rate; default: 1e-4, dense tasks 1e-3 "
                              "(measured: README, Dense tasks)")
    head_lr: float | None = option(None, "embedder and head learning rate (and LoRA adapters'); "
                                   "default: 1e-3, dense tasks 1e-2")
    weight_decay: float = option(0.01, "AdamW weight decay")
    # off by default: results differ slightly from the default AdamW (~1e-8 per step)
    fused_adamw: bool = option(False, "refine with torch's fused AdamW: one pass per tensor, a "
                               "CPU optimizer step ~5x faster (MiniLM: ~7% of a step), float "
                               "results slightly different from the default AdamW's")
    warmup: float | None = option(None, "fraction of refine steps with linear warm-up; default "
                                  "0.1, dense tasks 0.1 but at least 50 steps (at most half "
                                  "of them)")
    schedule: str = option("cosine", "learning rate after the warm-up: cosine decays to 0",
                           choices="|".join(SCHEDULE_CHOICES))
    head_init: str = option("probe", "how a pooled head starts the refine stage: probe (fitted "
                            "on the frozen features of the training split, then everything "
                            "fine-tunes: LP-FT) or random", choices="|".join(HEAD_INIT_CHOICES))
    head_norm: str = option("batch", "pooled heads: batch standardises the pooled features before "
                            "the linear layer (BatchNorm without affine, as MAE's linear probe: "
                            "pretrained features share one large mean direction) or none; "
                            "--head generate: the same for the body's tokens before the BERT "
                            "decoder's new cross-attention", choices="|".join(HEAD_NORM_CHOICES))
    # rel_l2 beat mse on every paired dense run (burgers 2 seeds, a second Burgers set, Darcy
    # at 25 and 64 tokens; README "Dense tasks")
    dense_loss: str = option("rel_l2", "dense tasks' training loss: rel_l2 (each sample's "
                             "relative L2 error in the targets' units, what the dense score "
                             "averages) or mse (on standardised targets)",
                             choices="|".join(DENSE_LOSS_CHOICES))
    grad_clip: float = option(1.0, "gradient norm clipping; 0 = off")
    patience: int = option(30, "early stopping: stop when the kept (best or tied) validation "
                                 "epoch is this many epochs old; 0 = off")
    val_fraction: float = option(0.2, "share of training data held out for validation")
    # CPU speed falls fast beyond 64 tokens (DESIGN.md)
    max_tokens: int | None = option(None, "token sequence cap (also capped at the body's "
                                    "limit); default 64, dense tasks at most one token per 4 "
                                    "grid points (32 on 128 points)")
    # 0 is ~20% faster per step and lost nothing we measured
    attention_dropout: float = option(0.0, "attention dropout of the body")
    dropout: float | str | None = option(None, "dropout of the body's layers while training "
                                         "(hidden dropout): a number, or body: the pretrained "
                                         "body's own (MiniLM 0.1); default: body, dense "
                                         "tasks 0")
    precision: str = option("auto", "auto: fp32 on CPU; on a GPU bf16 when supported and a train "
                            "step is large enough to gain (batch x tokens >= 8192 at width 384, "
                            "scaled by width^2; measured on an H200), else fp32",
                            choices="|".join(PRECISION_CHOICES))
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto|cpu|cuda[:N]")
    distributed: str = option("ddp", "several processes (torchrun / accelerate launch): ddp (each "
                              "holds the whole model) or fsdp (the refine stage shards weights, "
                              "gradients and AdamW state over the processes: FSDP2; README: Scale)",
                              choices="|".join(DISTRIBUTED_CHOICES))
    lora_r: int = option(8, "LoRA rank (--tune lora)")
    lora_alpha: int = option(16, "LoRA alpha (--tune lora)")
    lora_dropout: float = option(0.05, "LoRA dropout (--tune lora)")
    image_size: int | None = option(None, "CNN bodies: resize images to this side; default 64 "
                                    "(CPU speed)")
    augment: str = option("none", "transforms of training batches (refine stage), a comma list: "
                          "series/fields: roll (circular shift: periodic data), jitter, scaling, "
                          "magnitude-warp, time-warp, window-slice, mixup, cutmix (which ones a "
                          "task allows: README); CNN "
                          "image bodies: flip-crop (random flip + resized crop)")
    embedder: str | None = option(None, "token bodies: how inputs become tokens; default: rocket "
                           "for classes of series longer than the token cap (not tables), else "
                           "patch. patch (strided conv, "
                           "kernel = patch), overlap (kernel = 2 x patch, same tokens), conv (a "
                           "small convolutional stem at full resolution, then patch), rocket (series: "
                           "patch plus MiniRocket-style dilated-kernel features of each patch)",
                           choices="|".join(EMBEDDER_CHOICES))
    align_reg: float = option(0.05, "OTDD entropic regularisation, relative to the source spread")
    n_pseudo_labels: int = option(5, "k-means clusters of regression/dense targets for alignment")
    # a MiniLM checkpoint is ~260 MB, ~0.5 s to write
    checkpoint_every: int = option(0, "epochs between resumable checkpoints in RUN/checkpoint; "
                                   "0: automatic, at most ~5% of the time spent writing them",
                                   group="run")
    on_nan: str = option("stop", "on a non-finite loss or gradient: stop, or skip that batch",
                         choices="|".join(ON_NAN_CHOICES))
    # --- small data: README "Small data" (issue 16)
    folds: int = option(0, "k-fold model selection on the training data: K fold models, each "
                        "validated on its own fold, averaged as an ensemble; out-of-fold scores "
                        "replace the holdout's; 0: one model and a --val-fraction holdout")
    fold_epoch: str = option("common", "with --folds: common: the folds train side by side and "
                             "all keep the one epoch best on the pooled out-of-fold score (K "
                             "models in memory at once); own: each fold model keeps the epoch "
                             "best on its own fold (its out-of-fold score is chosen on those "
                             "samples: optimistic)", choices="|".join(FOLD_EPOCH_CHOICES))
    refit: bool = option(False, "with --folds and --fold-epoch common: then train one model on "
                         "all training data for the epochs the folds chose (same schedule) and "
                         "keep it instead of the fold models (their out-of-fold score stays the "
                         "run's validation score)")
    ensemble: int = option(1, "train this many models (seeds --seed, --seed+1, ...) and average "
                           "their probabilities (or values)")
    method: str = option("model", "model: the transformer alone; auto: also fit MiniRocket and "
                         "the linear baseline, compare them out-of-fold on the training data only "
                         f"(--folds, default {AUTO_FOLDS}); MiniRocket (series) is kept unless the "
                         "transformer or a blend beats it clearly out of fold",
                         choices="|".join(METHOD_CHOICES))
    # --- language as the interface (CLIP): README "Zero-shot"
    objective: str = option("supervised", "supervised: a head per task; contrastive: bind the "
                            "data to a text tower, to classify later by label words (CLIP)",
                            choices="|".join(OBJECTIVE_CHOICES))
    text_body: str = option("minilm", "the pretrained text model: contrastive's text tower, or "
                            "the warm start and tokenizer of --head generate's decoder")
    text_tune: str = option("frozen", "contrastive: the text encoder is locked (LiT), gets LoRA "
                            "adapters, or trains fully (its projection always trains)",
                            choices="|".join(TEXT_TUNE_CHOICES))
    templates: list[str] | None = option(None, "contrastive: prompt template with {} for the "
                                         "label; repeat for a prompt ensemble; default {}",
                                         flag="template")
    templates_file: str | None = option(None, "contrastive: templates, one per line (.txt) or a "
                                        "YAML list")
    descriptions: str | None = option(None, "contrastive: YAML file mapping each label to a "
                                      "description (or a list of them), used instead of templates")
    embed_dim: int = option(256, "contrastive: size of the shared embedding space")
    # --- labels as text (OFA): README "Labels as text"
    head: str = option("linear", "classification output: linear (one output per class) or "
                       "generate (a text decoder writes the label's words)",
                       choices="|".join(HEAD_CHOICES))
    decode: str | None = option(None, "generate: constrained (greedy inside a trie of the label "
                                "texts), score (the best whole label, exact) or free (unconstrained; "
                                "invalid answers counted); default constrained",
                                choices="|".join(DECODE_CHOICES))
    label_texts: str | None = option(None, "generate: YAML file mapping each label to its text "
                                     "(for codes like 0/1); default the labels themselves")
    label_smoothing: float = option(0.0, "generate: label smoothing of the decoder's loss, spread "
                                    "over the tokens the label trie allows")
    # one model, many tasks (issue 12 part 4): README "Labels as text"
    tasks: str | list[Any] | None = option(None, "generate: several classification tasks in one "
                                           "model: a YAML file listing per task data, name, "
                                           "instruction, label_texts, test_data (also `tasks:` "
                                           "in --config, or --data A --data B)", group="data")
    # fast: under a second on data of the bench's size; MiniRocket takes seconds (and aeon)
    baselines: str = option("fast", "cheap baselines scored on the test split beside the model "
                            "(summary.json): fast = linear + 1-NN, all = also MiniRocket "
                            "(series), none", choices="|".join(BASELINE_CHOICES), group="run")
    report_to: str = option("none", "experiment trackers (main process only; optional extras): none "
                            "or a comma list of tensorboard (RUN/tensorboard), mlflow "
                            "($MLFLOW_TRACKING_URI, default sqlite:///RUN/mlflow.db)", group="run")
    extra: dict[str, Any] = field(default_factory=dict)  # reserved; must stay empty

    def __post_init__(self) -> None:
        if self.extra:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(self.extra))}")
        self._coerce_numbers()
        _choice("align", self.align, ("none", *alignment_names()))
        if self.task in task_names("contrastive") and self.objective == "contrastive":
            self.task = "auto"  # config.yaml records the task a run trained; the objective picks it
        elif self.task in task_names("contrastive"):
            raise ConfigError(f"--task {self.task} is trained by --objective contrastive; pass that "
                              "instead of --task")
        _choice("task", self.task, ("auto", *task_names("supervised")))
        _choice("precision", self.precision, PRECISION_CHOICES)
        _choice("distributed", self.distributed, DISTRIBUTED_CHOICES)
        _choice("on_nan", self.on_nan, ON_NAN_CHOICES)
        _choice("schedule", self.schedule, SCHEDULE_CHOICES)
        _choice("head_init", self.head_init, HEAD_INIT_CHOICES)
        _choice("head_norm", self.head_norm, HEAD_NORM_CHOICES)
        _choice("dense_loss", self.dense_loss, DENSE_LOSS_CHOICES)
        self._check_text_options()
        self._check_member_options()
        self._check_task_list()
        self._check_head_options()
        _choice("baselines", self.baselines, BASELINE_CHOICES)
        columns = [(f, n) for f, n in (("--label-column", self.label_column), ("--id-column",
                   self.id_column), ("--text-column", self.text_column)) if n is not None]
        for i, (flag, name) in enumerate(columns):
            for other, same in columns[i + 1:]:
                if name == same:
                    raise ConfigError(f"{flag} and {other} are both {name!r}; a column has one role")
        parse_tune(self.tune)
        from .engine.trackers import parse_report_to

        parse_report_to(self.report_to)
        self._check_image_options()
        if self.align != "none" and self.tune == "scratch":
            raise ConfigError(
                "--align with --tune scratch makes no sense: alignment matches a pretrained "
                "body's input distribution; use --align none with --tune scratch"
            )
        for name in ("epochs", "batch_size", "max_tokens", "lora_r", "lora_alpha",
                     "n_pseudo_labels"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if int(self.checkpoint_every) < 0:
            raise ConfigError("--checkpoint-every must be >= 0 (0: automatic)")
        if self.align_epochs is None:
            self.align_epochs = 0 if self.align == "none" else 20
        if self.align_epochs < 0 or self.patience < 0:
            raise ConfigError("--align-epochs and --patience must be >= 0")
        if self.align == "none" and self.align_epochs > 0:
            raise ConfigError(
                "--align-epochs given but --align is none; add --align otdd|mmd|l2"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("--val-fraction must be between 0 and 1 (exclusive)")
        for name in ("lr", "head_lr", "align_reg"):
            if getattr(self, name) is not None and not float(getattr(self, name)) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.warmup is not None and not 0.0 <= self.warmup < 1.0:
            raise ConfigError("--warmup is a fraction of the steps, in [0, 1)")

    def _coerce_numbers(self) -> None:
        """Numbers given as text become numbers (PyYAML reads ``lr: 3e-5``, with no dot, as a
        string; ``bench defaults --fit`` parses with YAML too); a count must be whole (``epochs: 1.5``
        would otherwise reach ``range``)."""
        for f in dataclasses.fields(self):
            kind = NUMBER_TYPES.get(f.type)
            value = getattr(self, f.name)
            words = NUMBER_WORDS.get(f.name, ())
            if (kind is None or not isinstance(value, (str, float)) or type(value) is kind
                    or value in words):
                continue
            try:
                number = float(value)
                if kind is int and not number.is_integer():
                    raise ValueError
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                what += "".join(f" or {w}" for w in words)
                raise ConfigError(f"--{f.name.replace('_', '-')} must be {what}, got {value!r}") from None
            setattr(self, f.name, kind(number))

    def _check_text_options(self) -> None:
        _choice("objective", self.objective, OBJECTIVE_CHOICES)
        _choice("text_tune", self.text_tune, TEXT_TUNE_CHOICES)
        if self.templates is not None and isinstance(self.templates, str):
            self.templates = [self.templates]  # one template from YAML or a keyword argument
        if self.templates_file:
            from .tasks.contrastive import read_templates

            self.templates = [*(self.templates or []), *read_templates(self.templates_file)]
            self.templates_file = None  # resolved into templates: config.yaml records them
        if self.objective != "contrastive":
            given = [flag for flag, name in (("--template", "templates"),
                                             ("--descriptions", "descriptions"),
                                             ("--text-column", "text_column")) if getattr(self, name)]
            if given:
                raise ConfigError(f"{given[0]} applies to --objective contrastive only")
            return
        if self.task not in ("auto", "contrastive"):
            raise ConfigError(f"--objective contrastive learns from class texts; --task {self.task} "
                              "does not apply (drop --task)")
        if self.templates is not None:
            if not self.templates:
                raise ConfigError("--template: give at least one template, e.g. 'a recording of {}'")
            from .tasks.contrastive import check_templates

            check_templates(self.templates)
        if int(self.embed_dim) < 2:
            raise ConfigError("--embed-dim must be at least 2")

    def _check_member_options(self) -> None:
        """--folds, --ensemble, --method (issue 16): several models in one run."""
        _choice("method", self.method, METHOD_CHOICES)
        _choice("fold_epoch", self.fold_epoch, FOLD_EPOCH_CHOICES)
        if int(self.folds) < 0 or int(self.folds) == 1:
            raise ConfigError(f"--folds {self.folds}: give 2 or more folds, or 0 for one model "
                              "with a --val-fraction holdout")
        if int(self.ensemble) < 1:
            raise ConfigError("--ensemble must be at least 1 (1: a single model)")
        if self.refit and not (self.folds or self.method == "auto") or (
                self.refit and self.fold_epoch != "common"):
            raise ConfigError("--refit trains for the epochs that the folds chose together: "
                              "add --folds K (or --method auto) and --fold-epoch common")
        if self.method == "auto" and not self.folds:
            self.folds = AUTO_FOLDS  # resolved here, so config.yaml records the value used
        several = self.folds or self.ensemble > 1 or self.method == "auto"
        if several and self.objective == "contrastive":
            raise ConfigError("--folds, --ensemble and --method auto apply to --objective "
                              "supervised; a contrastive run is one text-bound model")
        if several and self.head != "linear":
            raise ConfigError(f"--folds, --ensemble and --method auto average class probabilities "
                              f"of linear heads; --head {self.head} is not supported with them yet")

    def _check_task_list(self) -> None:
        """Several tasks in one model (OFA): each answer is written as text by one shared
        decoder, so only classification with --head generate can share a model."""
        if self.tasks is None:
            return
        from .data.task_list import resolve_task_list

        self.tasks = resolve_task_list(self.tasks)  # resolved once: config.yaml records it
        if self.head != "generate":
            raise ConfigError(f"several tasks in one model need --head generate (each label is "
                              f"written as text by one shared decoder); --head {self.head} has one "
                              "output per class of one task")
        if self.task not in ("auto", "classification"):
            raise ConfigError(f"several tasks in one model are classification tasks; --task "
                              f"{self.task} does not apply (drop --task)")
        given = [flag for flag, name in (("--data", "data"), ("--test-data", "test_data"),
                                         ("--label-texts", "label_texts")) if getattr(self, name)]
        if given:
            raise ConfigError(f"{given[0]} with a task list: give each task its data, test_data "
                              "and label_texts inside the list (or --data A --data B)")
        if self.align != "none" or self.tune == "lora" or self.distributed != "ddp":
            flag = (f"--align {self.align}" if self.align != "none" else "--tune lora"
                    if self.tune == "lora" else f"--distributed {self.distributed}")
            raise ConfigError(f"{flag} is not supported for several tasks in one model yet; "
                              "drop it")

    def _check_head_options(self) -> None:
        _choice("head", self.head, HEAD_CHOICES)
        if self.head == "linear":
            given = [flag for flag, name in (("--decode", "decode"), ("--label-texts", "label_texts"))
                     if getattr(self, name) is not None]
            if self.label_smoothing:
                given.append("--label-smoothing")
            if given:
                raise ConfigError(f"{given[0]} applies to --head generate only (this run's head is "
                                  "linear); add --head generate or drop it")
            return
        if self.objective != "supervised":
            raise ConfigError(f"--head {self.head} is for --objective supervised; a contrastive "
                              "model has its own text tower")
        if self.task != "auto":
            from .tasks import get_task

            get_task(self.task).check_head(self.head)
        if self.decode is None:
            self.decode = "constrained"
        _choice("decode", self.decode, DECODE_CHOICES)
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")

    def _check_image_options(self) -> None:
        from .models.bodies import takes_pixels

        from .engine.augment import check_body, parse_augment

        cnn = takes_pixels(self.body)
        self.augment = parse_augment(self.augment)  # old files: true/false = flip-crop/none
        check_body(self.augment, cnn, self.body)
        if self.embedder is not None:  # None: the task chooses (Task.default_embedder)
            _choice("embedder", self.embedder, EMBEDDER_CHOICES)
        if cnn and self.embedder not in (None, "patch"):
            raise ConfigError(f"--embedder {self.embedder}: {self.body} takes images directly (no "
                              "embedder); drop --embedder")
        if not cnn and self.image_size is not None:
            raise ConfigError("--image-size and --augment flip-crop apply to CNN image bodies "
                              "(--body efficientnet-lite0) only")
        if self.image_size is not None and int(self.image_size) < 8:
            raise ConfigError(f"--image-size must be at least 8, got {self.image_size}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError("--lora-dropout must be in [0, 1)")
        if self.dropout not in (None, "body") and not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1) or body, got {self.dropout}")
        if cnn and self.align != "none":
            raise ConfigError(
                f"--align {self.align} trains an embedder to match the body's input distribution; "
                f"{self.body} takes images directly (no embedder), so use --align none"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FitConfig":
        """Build from a YAML/CLI dict; dashes or underscores in keys both work, and an option's
        command-line name (``template``) as well as its field name (``templates``)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        alias = {f.metadata["flag"]: f.name for f in cls.options() if f.metadata["flag"]}
        clean = {alias.get(k.replace("-", "_"), k.replace("-", "_")): v for k, v in values.items()}
        unknown = {k: v for k, v in clean.items() if k not in known}
        if unknown:
            raise ConfigError(
                f"unknown option(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        return out

    @classmethod
    def options(cls, group: str | None = None) -> list[dataclasses.Field]:
        """The option fields (all, or one ``group``), in declaration order."""
        return [f for f in dataclasses.fields(cls) if f.name != "extra"
                and (group is None or f.metadata["group"] == group)]

    @classmethod
    def describe(cls, name: str) -> str:
        """Help text of option ``name``: what it does, its choices and its default."""
        f = next(f for f in cls.options() if f.name == name)
        text = f.metadata["help"]
        if f.metadata["choices"]:
            text += f" ({f.metadata['choices']})"
        if f.default is not None and f.default is not False:
            text += f"; default {f.default}"
        return text


def read_yaml(path: str | Path, missing: str) -> Any:
    """The YAML document in ``path`` (None for an empty file); ``missing`` is the whole message
    when there is no such file. Callers check the shape they need."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(missing)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path} is not valid YAML ({first})") from None


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown --{name.replace('_', '-')} {value!r}; choose one of {', '.join(choices)}")


def options_markdown() -> str:
    """The README's table of ``fit`` options, made from the fields above (one source);
    ``tests/test_docs.py`` checks that the README holds exactly this table."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in FitConfig.options():
        flag = f"`--{(f.metadata['flag'] or f.name).replace('_', '-')}`"
        default = "" if f.default is None else f"`{f.default}`"
        text = f.metadata["help"]
        if f.metadata["choices"]:
            text += f": `{f.metadata['choices']}`"
        rows.append(f"| {flag} | {default} | {text.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)
