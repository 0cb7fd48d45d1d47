"""FitConfig: every option of ``fit``, checked once, in one place.

Like PEFT configs: a dataclass whose ``__post_init__`` checks values and combinations and
raises one clear :class:`ConfigError`; unknown keys (from YAML or keyword arguments) are an
error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

ALIGN_CHOICES = ("none", "otdd", "mmd", "l2")
TUNE_CHOICES = ("full", "scratch", "frozen", "layernorm", "hybrid:K", "lora")
TASK_CHOICES = ("auto", "classification", "regression", "dense")
PRECISION_CHOICES = ("auto", "fp32", "bf16")
ON_NAN_CHOICES = ("stop", "skip")
SCHEDULE_CHOICES = ("cosine", "constant")


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


@dataclass
class FitConfig:
    """All options of one fit. Defaults are the offline CPU defaults (see DESIGN.md)."""

    data: str | None = None  # dataset spec (path, ucr:NAME, folder:PATH); None for arrays
    test_data: str | None = None  # optional separate test set spec
    label_column: str = "label"  # CSV label column
    task: str = "auto"
    body: str = "minilm"
    align: str = "none"
    tune: str = "full"
    epochs: int = 60
    align_epochs: int | None = None  # None: 0 without alignment, 20 with it
    batch_size: int = 16
    lr: float = 1e-4  # body learning rate
    head_lr: float = 1e-3  # embedder and head learning rate
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of refine steps with linear warm-up
    schedule: str = "cosine"  # after warm-up: cosine decay to 0, or constant
    grad_clip: float = 1.0
    patience: int = 30  # early stopping on the validation metric; 0 disables
    val_fraction: float = 0.2
    max_tokens: int = 64  # sequence length cap; CPU speed falls fast beyond 64 (DESIGN.md)
    attention_dropout: float = 0.0  # 0 is ~20% faster per step and lost nothing we measured
    precision: str = "auto"  # auto: fp32 on CPU (measured), bf16 on CUDA when supported
    seed: int = 0
    device: str = "auto"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    image_size: int | None = None  # CNN bodies: images resized to this side; None = 64 (CPU speed)
    augment: bool = False  # CNN bodies: random flip + resized crop of training images
    align_reg: float = 0.05  # OTDD entropic eps relative to the source spread (align/distances.py)
    n_pseudo_labels: int = 5  # k-means clusters of targets for regression/dense alignment
    # epochs between resumable checkpoints (run folders only); 0 = auto: as often as keeps
    # checkpoint writing under ~5% of the time (a MiniLM checkpoint is ~260 MB, ~0.5 s)
    checkpoint_every: int = 0
    on_nan: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)  # reserved; must stay empty

    def __post_init__(self) -> None:
        if self.extra:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(self.extra))}")
        _choice("align", self.align, ALIGN_CHOICES)
        _choice("task", self.task, TASK_CHOICES)
        _choice("precision", self.precision, PRECISION_CHOICES)
        _choice("on_nan", self.on_nan, ON_NAN_CHOICES)
        _choice("schedule", self.schedule, SCHEDULE_CHOICES)
        parse_tune(self.tune)
        self._check_image_options()
        if self.align != "none" and self.tune == "scratch":
            raise ConfigError(
                "--align with --tune scratch makes no sense: alignment matches a pretrained "
                "body's input distribution; use --align none with --tune scratch"
            )
        for name in ("epochs", "batch_size", "max_tokens", "lora_r", "lora_alpha",
                     "n_pseudo_labels"):
            if int(getattr(self, name)) < 1:
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
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError("--warmup is a fraction of the steps, in [0, 1)")

    def _check_image_options(self) -> None:
        from .image_model import is_cnn_body

        cnn = is_cnn_body(self.body)
        if not cnn and (self.image_size is not None or self.augment):
            raise ConfigError("--image-size and --augment apply to CNN image bodies "
                              "(--body efficientnet-lite0) only")
        if self.image_size is not None and int(self.image_size) < 8:
            raise ConfigError(f"--image-size must be at least 8, got {self.image_size}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError("--lora-dropout must be in [0, 1)")
        if cnn and self.align != "none":
            raise ConfigError(
                f"--align {self.align} trains an embedder to match the body's input distribution; "
                f"{self.body} takes images directly (no embedder), so use --align none"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FitConfig":
        """Build from a YAML/CLI dict; dashes or underscores in keys both work."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        clean = {k.replace("-", "_"): v for k, v in values.items()}
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


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown --{name} {value!r}; choose one of {', '.join(choices)}")
