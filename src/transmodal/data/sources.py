"""Data sources: load any supported spec or arrays into a validated :class:`Dataset`.

Sources (one string spec each, or arrays from Python):

- ``path.npz`` with ``x_train, y_train`` (and optionally ``x_test, y_test``) or just ``x, y``;
  a caption per sample as string arrays ``text_train`` (and ``text_test``), which make the
  labels optional (contrastive fits);
- ``path.csv``: one row per sample, a label column (``--label-column``, default ``label``),
  optionally a caption column (``--text-column``), every other column a feature; the features
  form a 1-channel series ``(1, n_features)``;
- ``ucr:NAME``: a UCR/UEA set bundled in aeon (classification), or one of aeon's bundled
  regression sets (``ucr:Covid3Month``), train/test split as published;
- ``folder:PATH``: an image folder, one sub-folder per class (see ``images.py``).

Inputs are ``(N, L)``, ``(N, C, L)`` or ``(N, C, H, W)`` (``arrays.py`` checks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .arrays import as_inputs, as_texts, check_labels, check_xy
from .columns import check_numeric, column_names, feature_order, is_frame, read_table
from .stream import DiskArray, as_disk


@dataclass
class Dataset:
    """Training (and optional test) arrays; x is float32 (N, C, *spatial)."""

    x_train: np.ndarray
    y_train: np.ndarray | None  # None: a captioned set without labels
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    name: str = "arrays"
    variable_length: bool = False  # True if training series were resampled to one length
    feature_names: list[str] | None = None  # tables (CSV, DataFrame): the feature columns
    text_train: np.ndarray | None = None  # a caption per training sample (str, (N,))
    text_test: np.ndarray | None = None


# ----------------------------------------------------------------------------- loading


def load_dataset(
    data: Any,
    test_data: Any = None,
    label_column: str = "label",
    id_column: str | None = None,
    text_column: str | None = None,
) -> Dataset:
    """Load a spec string or arrays into a validated :class:`Dataset`. ``id_column`` (CSV
    only) names a column of sample ids that is not a feature; ``text_column`` (CSV only) a
    column holding a caption per sample."""
    for flag, name in (("--id-column", id_column), ("--text-column", text_column)):
        if name is not None and not str(data).endswith(".csv"):
            hint = " (an .npz or dict holds captions as text_train / text_test)" if flag == "--text-column" else ""
            raise DataError(f"{flag} {name} applies to CSV data only{hint}; drop it")
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, (str, Path)):
        ds = _load_spec(str(data), label_column, id_column, text_column)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        ds = _pair_dataset(data[0], data[1], "arrays")
    elif isinstance(data, dict):
        ds = _from_mapping(data, "data")
    else:
        raise DataError(
            "data must be a path (.npz/.csv), 'ucr:NAME', 'folder:PATH', an (x, y) pair "
            f"or a dict with x_train/y_train; got {type(data).__name__}"
        )
    if test_data is not None:
        csv = str(test_data).endswith(".csv")
        test = load_dataset(test_data, label_column=label_column, id_column=id_column if csv else None,
                            text_column=text_column if csv else None)
        ds.x_test, ds.y_test, ds.text_test = test.x_train, test.y_train, test.text_train
        if ds.text_test is not None and ds.text_train is None:
            raise DataError("the test data have captions but the training data have none; "
                            "give captions for both, or for neither")
        if ds.feature_names is not None and test.feature_names is not None:  # match by name
            ds.x_test = ds.x_test[..., feature_order(test.feature_names, ds.feature_names,
                                                     "test data")]
    return ds


def as_inputs_pair(x: Any, y: Any, target_length: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Checked arrays and whether x was variable-length (resampled to its longest series);
    ``y`` None (captions instead of labels) stays None."""
    x_arr, lengths = as_inputs(x, target_length=target_length)
    y_arr = None if y is None else np.asarray(y)
    check_xy(x_arr, y_arr)
    return x_arr, y_arr, bool(lengths)


def _pair_dataset(x: Any, y: Any, name: str) -> Dataset:
    if isinstance(x, (np.memmap, DiskArray)):  # stays on disk (stream.py)
        x_disk, y_arr = as_disk(x), np.asarray(y)
        if y_arr.ndim == 0 or len(x_disk) != len(y_arr):
            raise DataError(f"x has {len(x_disk)} samples but y has {y_arr.size}; they must match")
        check_labels(y_arr)
        return Dataset(x_disk, y_arr, name=name)
    x_arr, y_arr, variable = as_inputs_pair(x, y)
    return Dataset(x_arr, y_arr, name=name, variable_length=variable,
                   feature_names=column_names(x) if is_frame(x) else None)


def _load_spec(spec: str, label_column: str, id_column: str | None = None,
               text_column: str | None = None) -> Dataset:
    if spec.startswith("ucr:"):
        return _load_ucr(spec[4:])
    if spec.startswith("folder:"):
        from .images import load_image_folder

        x, y = load_image_folder(spec[len("folder:"):])
        return Dataset(x.astype(np.float32), y, name=Path(spec[7:]).name)
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"data file {spec!r} does not exist; give a .npz or .csv path, 'ucr:NAME' "
            "or 'folder:PATH' (see `transmodal info` for bundled datasets)"
        )
    if path.suffix == ".npz":
        return _from_mapping(read_npz(path), path.name)  # validation errors are not read errors
    if path.suffix == ".csv":
        return _load_csv(path, label_column, id_column, text_column)
    if path.is_dir():  # a data folder of .npy files (inputs stay on disk: stream.py)
        from .stream import load_npy_folder

        return load_npy_folder(path)  # no x_train there: says so, and names folder: for images
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .npz or .csv")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, never unpickling; one clear error for a bad file."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise DataError(f"{path} holds a single array, not an .npz archive; save it with numpy.savez")
            return {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays (or a pickle renamed .npz) need pickle: refuse them
        if "pickle" not in str(e):
            raise DataError(f"{path} is not a readable .npz file ({e})") from None
        raise DataError(f"{path} holds pickled (object) data, which transmodal never loads; save "
                        "plain numeric (or string) arrays with numpy.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}); it may be "
                        "truncated: save it again with numpy.savez") from None


def _from_mapping(m: dict, name: str) -> Dataset:
    if "text_test" in m and "text_train" not in m:
        raise DataError(f"{name}: has text_test but no text_train; captions of the test split "
                        "need captions to train on: add text_train, or drop text_test")
    if "x_train" in m and ("y_train" in m or "text_train" in m):
        ds = _pair_dataset(m["x_train"], m.get("y_train"), str(name))
        if "text_train" in m:
            ds.text_train = as_texts(m["text_train"], len(ds.x_train), f"{name}: text_train")
        targets = ("y_test", "text_test") if "text_train" in m else ("y_test",)
        if "x_test" in m or any(k in m for k in targets):
            if not ("x_test" in m and any(k in m for k in targets)):
                raise DataError(f"{name}: has only one of x_test/{' or '.join(targets)}; give "
                                "x_test with its labels (or captions), or neither")
            length = ds.x_train.shape[-1] if ds.variable_length else None
            ds.x_test, ds.y_test, _ = as_inputs_pair(m["x_test"], m.get("y_test"), length)
            if "text_test" in m:
                ds.text_test = as_texts(m["text_test"], len(ds.x_test), f"{name}: text_test")
        return ds
    if "x" in m and "y" in m:
        return _pair_dataset(m["x"], m["y"], str(name))
    raise DataError(
        f"{name}: needs arrays named x_train and y_train (optionally x_test, y_test; captions as "
        "text_train, text_test) or x and y; "
        f"found {', '.join(sorted(m)) or 'nothing'}"
    )


def _load_csv(path: Path, label_column: str, id_column: str | None = None,
              text_column: str | None = None) -> Dataset:
    """A table; with a caption column the label column may be absent (a captioned set)."""
    frame, y, _ = read_table(path, label_column, id_column, label_required=text_column is None)
    texts = None
    if text_column is not None:
        if text_column not in frame.columns:
            raise DataError(f"{path}: no text column {text_column!r}; columns are "
                            f"{', '.join(map(str, frame.columns[:10]))}. Pass --text-column NAME")
        texts = as_texts(frame.pop(text_column).to_numpy(), len(frame),
                         f"{path}: text column {text_column!r}")
    check_numeric(frame, str(path))
    x = frame.to_numpy(dtype=np.float32)[:, None, :]  # (N, 1, n_features)
    check_xy(x, y)
    return Dataset(x, y, name=path.stem, feature_names=column_names(frame), text_train=texts)


UCR_REGRESSION = ("Covid3Month", "CardanoSentiment")


def _load_ucr(name: str) -> Dataset:
    from aeon.datasets import load_classification, load_regression

    loader = load_regression if name in UCR_REGRESSION else load_classification
    try:
        x, y = loader(name, split="train")
        xt, yt = loader(name, split="test")
    except Exception as e:  # aeon tries a download for names it does not bundle
        raise DataError(
            f"unknown or unavailable dataset 'ucr:{name}' ({type(e).__name__}); offline, only the "
            f"sets bundled in aeon load: {', '.join(bundled_ucr_names())}"
        ) from None
    x_arr, lengths = as_inputs(x, target_length=None)
    xt_arr, _ = as_inputs(xt, target_length=x_arr.shape[-1] if lengths else None)
    y_arr = np.asarray(y)
    yt_arr = np.asarray(yt)
    if loader is load_regression:
        y_arr, yt_arr = y_arr.astype(np.float32), yt_arr.astype(np.float32)
    check_xy(x_arr, y_arr)
    check_xy(xt_arr, yt_arr)
    return Dataset(x_arr, y_arr, xt_arr, yt_arr, name=name, variable_length=bool(lengths))


def bundled_ucr_names() -> list[str]:
    """Datasets that aeon ships inside the package (usable offline)."""
    import aeon.datasets

    root = Path(aeon.datasets.__file__).parent / "data"
    names = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and (any(d.glob("*_TRAIN.ts")) or any(d.glob("*_TRAIN.tsv"))):
            names.append(d.name)
    return names
