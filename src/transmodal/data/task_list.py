"""The task list of a multi-task fit (OFA, issue 12 part 4): ``--data A --data B``, ``--tasks
FILE.yaml`` or ``tasks:`` in a ``--config`` file.

Each entry names one classification task: ``data`` (a spec string; in-memory arrays through the
API are recorded as ``"arrays"``), optional ``name`` (default: the data file's stem),
``instruction`` (default ``"which class is this {name} sample?"``), ``label_texts`` (a mapping
label -> text, or a YAML file of one) and ``test_data``. The list is resolved here once, so
config.yaml records every value the run used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

TASK_KEYS = ("name", "data", "test_data", "instruction", "label_texts")
DEFAULT_INSTRUCTION = "which class is this {name} sample?"


def read_task_list(path: str) -> list[Any]:
    """The list in a YAML file: a top-level list, or the list under ``tasks:``."""
    from ..config import read_yaml

    values = read_yaml(path, f"--tasks {path} does not exist")
    if isinstance(values, dict) and "tasks" in values:
        values = values["tasks"]
    if not isinstance(values, list):
        raise ConfigError(f"--tasks {path} must hold a list of tasks (or one under 'tasks:'), "
                          "each with at least 'data'")
    return values


def default_name(data: Any, index: int) -> str:
    """The data file's stem (``ucr:GunPoint`` -> ``GunPoint``); ``taskN`` for in-memory data.
    Dots become underscores: a task name is a module key."""
    if not isinstance(data, str) or data == "arrays":
        return f"task{index + 1}"
    stem = Path(data.split(":", 1)[-1]).stem or f"task{index + 1}"
    return stem.replace(".", "_")


def resolve_task_list(tasks: Any) -> list[dict[str, Any]]:
    """Checked task entries with every default filled in (one clear error per problem)."""
    if isinstance(tasks, str):
        tasks = read_task_list(tasks)
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError("tasks must be a non-empty list of {data, name, instruction, "
                          "label_texts} entries")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(tasks):
        if isinstance(entry, str):  # a bare data spec
            entry = {"data": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"task number {i + 1} must be a mapping with at least 'data'")
        unknown = sorted(set(entry) - set(TASK_KEYS))
        if unknown:
            raise ConfigError(f"task number {i + 1}: unknown key(s) {', '.join(unknown)}; a task "
                              f"takes {', '.join(TASK_KEYS)}")
        if not entry.get("data"):
            raise ConfigError(f"task number {i + 1} has no data; give 'data: FILE' (or ucr:NAME)")
        name = str(entry.get("name") or default_name(entry["data"], i))
        if "." in name or not name.strip():
            raise ConfigError(f"task name {name!r}: use a non-empty name without dots")
        instruction = entry.get("instruction")
        instruction = DEFAULT_INSTRUCTION.format(name=name) if instruction is None else str(instruction)
        if not instruction.strip():
            raise ConfigError(f"task {name!r}: the instruction is empty; give it words or drop it")
        out.append({"name": name, "data": entry["data"], "test_data": entry.get("test_data"),
                    "instruction": instruction, "label_texts": _label_texts(entry.get("label_texts"))})
    names = [t["name"] for t in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two tasks are named {twice[0]!r}; give each task its own name")
    return out


def _label_texts(value: Any) -> dict[str, str] | None:
    """A task's label -> text mapping, read from a YAML file when given as a path."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        from ..tasks.text_labels import read_label_texts

        return read_label_texts(str(value))
    if not isinstance(value, dict) or not value:
        raise ConfigError("a task's label_texts must map each label to its text, or name a "
                          "YAML file of such a mapping")
    return {str(k): str(v) for k, v in value.items()}
