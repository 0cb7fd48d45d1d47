"""Tables (CSV files, pandas DataFrames): feature columns are matched by name, never by position.

A model fitted on a table stores its feature column names (``Preprocessor.feature_names``, like
scikit-learn's ``feature_names_in_``). At predict/evaluate time the columns of a new table are
put into that order by name; a missing or unexpected column is an error that names it. A label
column and an id column (``--id-column``: sample names carried into the predictions file) are
never features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError


def is_frame(x: Any) -> bool:
    """A pandas DataFrame (checked without importing pandas)."""
    return hasattr(x, "columns") and hasattr(x, "iloc")


def column_names(frame: Any) -> list[str]:
    return [str(c) for c in frame.columns]


def feature_order(have: Sequence[str], want: Sequence[str], where: str) -> list[int]:
    """Positions in ``have`` of the names ``want`` (the model's feature columns, in its order);
    one DataError naming every missing and unexpected column."""
    have, want = list(have), list(want)
    missing = [n for n in want if n not in have]
    unexpected = [n for n in have if n not in want]
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + (
            [f"unexpected {_names(unexpected)} (not a feature of the model; an id or label "
             "column? pass --id-column NAME or --label-column NAME)"] if unexpected else [])
        raise DataError(f"{where}: the columns differ from the {len(want)} feature columns the "
                        f"model was fitted on: {'; '.join(parts)}. Give the training columns "
                        "(in any order)")
    return [have.index(n) for n in want]


def _names(names: list[str], shown: int = 5) -> str:
    text = ", ".join(repr(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def frame_inputs(frame: Any, feature_names: list[str] | None, where: str,
                 drop: Sequence[str | None] = ()) -> np.ndarray:
    """Feature columns of a table as (N, 1, F) float32, in the model's order when it has
    ``feature_names`` (else as given); columns named in ``drop`` (label, id) are left out."""
    drop = [c for c in drop if c in frame.columns and c not in (feature_names or ())]
    frame = frame.drop(columns=drop)
    if feature_names is not None:
        frame = frame.iloc[:, feature_order(column_names(frame), feature_names, where)]
    check_numeric(frame, where)
    return frame.to_numpy(dtype=np.float32)[:, None, :]  # (N, 1, n_features)


def check_numeric(frame: Any, where: str) -> None:
    import pandas as pd

    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        value = next(v for v in frame[bad[0]] if not _is_number(v))
        raise DataError(f"{where}: column {bad[0]!r} holds non-numeric values (e.g. {value!r}); "
                        "every feature column must be numeric")
    if frame.shape[1] == 0:
        raise DataError(f"{where}: no feature columns (only the label or id column); give at "
                        "least one numeric feature column")


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def read_table(path: Path, label_column: str, id_column: str | None, label_required: bool = True,
               id_required: bool = True) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
    """A CSV file as (feature frame, labels, ids): the label and id columns are taken out (None
    where absent); each must exist when it is ``required`` (and, for the id, given)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as e:  # pandas raises many types for a broken file
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    for kind, name, required in (("label", label_column, label_required),
                                 ("id", id_column, id_required)):
        if name is not None and required and name not in frame.columns:
            raise DataError(f"{path}: no {kind} column {name!r}; columns are "
                            f"{', '.join(map(str, frame.columns[:10]))}. Pass --{kind}-column NAME")
    ids = frame.pop(id_column).to_numpy() if id_column in frame.columns else None
    labels = frame.pop(label_column).to_numpy() if label_column in frame.columns else None
    return frame, labels, ids
