"""The search space: which fit options a search samples, and over what.

A space is a mapping ``option: spec`` (a YAML file with ``--space``), where ``option`` is a
FitConfig field and ``spec`` is one of::

    lr: {low: 1.0e-5, high: 1.0e-3, log: true}   # a float range (log: sample the exponent)
    align_epochs: {low: 0, high: 20, step: 5}    # an int range when the option is an int
    tune: [full, layernorm, frozen, lora]        # choices

Options the command line (or ``--config``) fixes are taken out of the space: a fixed value wins.
``align_epochs`` also decides whether a trial aligns: 0 is ``--align none``; more than 0 aligns
with ``--align`` (``otdd`` when it is ``none``).
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

from ..config import FitConfig
from ..errors import ConfigError
from ..tasks.base import Task


def default_space(learning_rates: tuple[float, float] = Task.learning_rates) -> dict[str, Any]:
    """What a search samples unless --space replaces it, for a task whose default rates are
    ``learning_rates`` (body, head): each rate a decade either side of its default, so the
    default sits in the middle (a dense task's 1e-3 was the edge of one fixed range); align
    epochs, tune strategy and token cap. Scratch is left out: it cannot be combined with
    alignment."""
    body, head = learning_rates
    return {
        "lr": {"low": body / 10, "high": body * 10, "log": True},
        "head_lr": {"low": head / 10, "high": head * 10, "log": True},
        "align_epochs": {"low": 0, "high": 20, "step": 5},
        "tune": ["full", "layernorm", "frozen", "lora"],
        "max_tokens": [16, 32, 64],
    }


# the default space of every task at the base rates (all but dense): lr 1e-5..1e-3
DEFAULT_SPACE: dict[str, Any] = default_space()

# options that say where the data are, not how to train: never searched
NOT_SEARCHABLE = ("data", "test_data", "label_column")


def load_space(path: str | Path | None, fixed: dict[str, Any] | None = None,
               learning_rates: tuple[float, float] = Task.learning_rates) -> dict[str, Any]:
    """The checked space of ``path`` (YAML), or the default space around the task's
    ``learning_rates``, less the ``fixed`` options (each choice and bound is checked together
    with them)."""
    fixed = fixed or {}
    if path is None:
        return check_space(default_space(learning_rates), "the default search space", fixed)
    from ..config import read_yaml

    path = Path(path)
    raw = read_yaml(path, f"search space {path} does not exist; pass a YAML file of option: range")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"search space {path} must be a non-empty mapping of option: range, e.g. "
                          "'lr: {low: 1.0e-5, high: 1.0e-3, log: true}'")
    return check_space(raw, f"search space {path}", fixed)


def check_space(raw: dict[str, Any], where: str, fixed: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Normalise ``raw`` ({option: range or choices}) and drop the ``fixed`` options; one
    ConfigError for anything wrong."""
    fixed = {k: v for k, v in (fixed or {}).items() if k not in NOT_SEARCHABLE}
    hints = typing.get_type_hints(FitConfig)
    known = [f.name for f in FitConfig.options() if f.name not in NOT_SEARCHABLE]
    space: dict[str, Any] = {}
    for key, spec in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown option {key!r}; searchable options: "
                              f"{', '.join(known)}")
        kind = _scalar(hints[name])
        check = lambda value: _check_value(name, value, where, fixed)  # noqa: E731
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{where}: {key} has an empty list of choices; give at least one")
            for value in spec:  # each choice must be valid with the fixed options
                check(value)
            space[name] = list(spec)
        elif isinstance(spec, dict):
            space[name] = _range(key, spec, kind, where, check)
        else:
            raise ConfigError(f"{where}: {key} must be a list of choices or a range "
                              "{low: A, high: B} (optionally log: true, step: S)")
    return without_fixed(space, fixed)


def _range(key: str, spec: dict[str, Any], kind: type, where: str, check: Any) -> dict[str, Any]:
    extra = set(spec) - {"low", "high", "log", "step"}
    if extra or not {"low", "high"} <= set(spec):
        raise ConfigError(f"{where}: {key} range needs low and high (and optionally log, step); "
                          f"got {', '.join(map(str, spec))}")
    if kind not in (int, float):
        raise ConfigError(f"{where}: {key} is not numeric; give a list of choices instead")
    try:  # YAML 1.1 reads 1e-5 (no dot) as a string
        low, high = float(spec["low"]), float(spec["high"])
        step = None if spec.get("step") is None else float(spec["step"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} low/high/step must be numbers") from None
    log = bool(spec.get("log", False))
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"{where}: {key} has an empty range (low {spec['low']} > high "
                          f"{spec['high']}); give low <= high")
    if kind is int and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: {key} is an integer option; give integer low and high")
    if log and low <= 0:
        raise ConfigError(f"{where}: {key} has log: true, so low must be positive (got {spec['low']})")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: {key} step must be positive and cannot be combined with log")
    for value in (low, high):
        check(int(value) if kind is int else value)
    return {"low": int(low) if kind is int else low, "high": int(high) if kind is int else high,
            "log": log, "step": None if step is None else (int(step) if kind is int else step),
            "kind": kind.__name__}


def _check_value(name: str, value: Any, where: str, fixed: dict[str, Any]) -> None:
    """A value FitConfig refuses with the fixed options (e.g. --tune nonsense, a negative lr)
    is refused now, before any trial runs."""
    if name in fixed:
        return  # not searched
    try:
        FitConfig.from_dict(trial_options(fixed, {name: value}))
    except ConfigError as e:
        raise ConfigError(f"{where}: {name}={value!r} is not a valid value ({e})") from None


def _scalar(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def sample(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """One trial's values of the searched options (Optuna's define-by-run API)."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            values[name] = trial.suggest_categorical(name, spec)
        elif spec["kind"] == "int":
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec["step"] or 1,
                                             log=spec["log"])
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec["step"],
                                               log=spec["log"])
    return values


def trial_options(fixed: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """The fit options of one trial: the fixed ones, the sampled ones, and the align rule."""
    options = {**fixed, **sampled}
    if "align_epochs" in sampled:
        if sampled["align_epochs"] == 0:
            options["align"] = "none"
        elif options.get("align", "none") == "none":
            options["align"] = "otdd"
    return options


def without_fixed(space: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Options fixed on the command line or in --config are not searched."""
    return {k: v for k, v in space.items() if k not in fixed}
