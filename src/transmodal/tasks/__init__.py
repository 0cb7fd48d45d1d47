"""Tasks: one module per objective, found by name in a registry (see ``base.Task``).

Adding an objective is one new module with a ``@register_task`` class, imported below (or
from user code: registration is all it takes; see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

_TASKS: dict[str, type] = {}


def register_task(cls: type) -> type:
    """Class decorator: make a :class:`~transmodal.tasks.base.Task` subclass known by its ``name``."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ConfigError(f"a task named {cls.name!r} is already registered")
    _TASKS[cls.name] = cls
    return cls


def task_names(objective: str | None = None) -> tuple[str, ...]:
    """Registered tasks (of one ``--objective``, when given)."""
    return tuple(n for n, c in _TASKS.items() if objective is None or c.objective == objective)


def get_task(name: str):
    """An unfitted task object for ``name`` (``--task``)."""
    try:
        return _TASKS[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(_TASKS)}") from None


def task_from_state(d: dict[str, Any]):
    """A fitted task from a stored preprocessing record (``model.json``)."""
    name = d.get("task")
    if name not in _TASKS:
        raise ConfigError(f"the stored model has task {name!r}, which this version does not know "
                          f"({', '.join(_TASKS)})")
    return _TASKS[name].from_state(d)


def infer_task(x: np.ndarray, y: np.ndarray) -> str:
    """``--task auto``: the first task (by ``infer_rank``) whose ``matches`` accepts the labels.

    Today: y shaped like x's grid is dense; strings/integers are classes; floats are regression.
    """
    ranked = sorted((c for c in _TASKS.values() if c.infer_rank is not None),
                    key=lambda c: c.infer_rank)
    for cls in ranked:
        if cls().matches(x, y):
            return cls.name
    raise DataError(f"cannot infer the task from labels of dtype {y.dtype}; pass --task")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of a primary metric is better (accuracy yes; rmse, rel_l2 no)."""
    for cls in _TASKS.values():
        if cls.primary[0] == metric:
            return cls.primary[1]
    raise ConfigError(f"{metric!r} is no task's primary metric")


def score(task: str, y_true: Any, y_pred: Any) -> dict[str, float]:
    """Scores of predictions in label space for ``task``: the one scoring function of the
    package and the benchmarks."""
    return get_task(task).score(np.asarray(y_true), np.asarray(y_pred))


# the built-in tasks register themselves on import
from . import classification, contrastive, dense, regression  # noqa: E402,F401
from .dense import rel_l2  # noqa: E402

__all__ = ["register_task", "get_task", "task_from_state", "task_names", "infer_task", "score",
           "higher_is_better", "rel_l2"]
