"""The methods the suite compares: transmodal ``align+tune`` pairs and the baselines' labels.

- **methods**: transmodal as ``align+tune`` pairs (``METHODS``: ORCA = otdd+full, vanilla
  fine-tuning = none+full, FPT = none+layernorm, frozen body = none+frozen, scratch =
  none+scratch; any other pair such as ``none+lora`` or ``none+hybrid:3`` can be named), each
  over ``--seeds`` seeds (mean and sample standard deviation); the baselines of
  ``bench/baselines.py`` (MiniRocket + ridge, linear, 1-NN), fitted once (they are
  deterministic up to MiniRocket's seed 0); and, for the UCR sets, the published default-split
  accuracies of ROCKET, MiniRocket and HIVE-COTE 2 (``bench/published.py``).
"""

from __future__ import annotations

from transmodal.errors import ConfigError

# method key -> (label, align, tune). Any "ALIGN+TUNE" string works as a key as well.
METHODS: dict[str, tuple[str, str, str]] = {
    "orca": ("ORCA (otdd+full)", "otdd", "full"),
    "full": ("fine-tune (none+full)", "none", "full"),
    "layernorm": ("FPT (none+layernorm)", "none", "layernorm"),
    "frozen": ("frozen body (none+frozen)", "none", "frozen"),
    "scratch": ("scratch (none+scratch)", "none", "scratch"),
}
BASELINE_LABELS = {"minirocket": "MiniRocket+ridge", "linear": "linear (logistic/ridge)",
                   "1nn": "1-NN"}


def parse_methods(text: str) -> list[str]:
    keys = [m.strip() for m in text.split(",") if m.strip()]
    if not keys:
        raise ConfigError("--methods is empty")
    for k in keys:
        method_spec(k)
    return keys


def method_spec(key: str) -> tuple[str, str, str]:
    """(label, align, tune) for a named method or an ``ALIGN+TUNE`` pair."""
    if key in METHODS:
        return METHODS[key]
    if "+" in key:
        align, tune = key.split("+", 1)
        return key, align, tune
    raise ConfigError(f"unknown method {key!r}; use {', '.join(METHODS)} or ALIGN+TUNE "
                      "(e.g. none+lora, none+hybrid:3)")


def parse_baselines(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    names = [b.strip() for b in text.split(",") if b.strip()]
    for b in names:
        if b not in BASELINE_LABELS:
            raise ConfigError(f"unknown baseline {b!r}; choose from {', '.join(BASELINE_LABELS)} or none")
    return names
