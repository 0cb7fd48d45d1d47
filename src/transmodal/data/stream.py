"""Arrays on disk, larger than memory: read row by row, in batches and chunks, never whole.

A data folder (``--data FOLDER``) holds ``x_train.npy`` and ``y_train.npy`` (optionally
``x_test.npy`` and ``y_test.npy``), or, in place of any x file, a folder of shards
(``x_train/000.npy, 001.npy, ...``, read in name order as one array; the labels may be one file
or shards of their own). Each file is opened with ``np.load(mmap_mode="r")`` only to read its
header (shape, dtype, data offset); rows are then read with ``os.preadv`` into a fresh buffer.
Why not through the mapping: pages touched through a mapping count in the process's resident
memory (RSS) until the kernel needs them back, so a pass over a 1.5 GB file "uses" 1.5 GB,
while a read into a buffer uses only the buffer (the page cache is the kernel's, not ours).

Labels are small (one per sample) and are loaded whole; inputs stay on disk. What streams:
the normalisation statistics (one pass, Chan's merge of per-chunk mean and variance), the
training batches (the loader's rows read, cast to float32 and normalised per batch), validation,
test and ``predict`` (in batches), the data fingerprint (chunks). The align stage takes a
bounded, class-stratified sample (:func:`bounded_sample`); the baselines skip large data.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DataError

CHUNK_BYTES = 8 * 2**20  # float32 bytes read at once by a streaming pass (stats, fingerprint);
# the statistics pass holds two float64 temporaries of a chunk (see channel_stats)
ALIGN_MAX_ROWS = 4096  # the align stage embeds its whole sample at once (before/after features)
ALIGN_MAX_BYTES = 256 * 2**20


class _Files:
    """Open read-only descriptors, shared by an array and its views (pread keeps no file
    position, so DataLoader workers and views may share them)."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def fd(self, path: str) -> int:
        if path not in self.fds:
            self.fds[path] = os.open(path, os.O_RDONLY)
        return self.fds[path]

    def __getstate__(self) -> dict[str, Any]:
        return {"fds": {}}  # a pickled copy (a worker process) opens its own

    def __del__(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


class DiskArray:
    """Samples ``(N, C, *spatial)`` as float32 from one or more ``.npy`` files (or arrays such
    as a ``np.memmap``), read on demand.

    ``a[i]`` and ``a[i:j]`` read those rows (numpy arrays); ``a[rows]`` with an index array is
    another lazy view of those rows; ``a.map(f)`` a lazy view whose reads pass through ``f``
    (the normalisation; ``f`` gets a fresh float32 array of its own, which it may overwrite);
    ``np.asarray(a)`` reads everything (only for data known to be small).
    """

    def __init__(self, parts: list[tuple[Any, int, int]], row_shape: tuple[int, ...],
                 dtype: np.dtype, name: str, index: np.ndarray | None = None,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 files: _Files | None = None) -> None:
        """``parts``: (path or array, byte offset, rows) per file in order; ``row_shape``: one
        stored sample's shape; ``index``: the rows of this view (None: all)."""
        self.parts, self.row_shape, self.stored_dtype, self.name = parts, tuple(row_shape), dtype, name
        self.starts = np.cumsum([0] + [p[2] for p in parts])  # first global row of each part
        self.index, self.transform = index, transform
        self.files = files or _Files()
        self.sample_shape = self.row_shape if len(self.row_shape) >= 2 else (1, *self.row_shape)

    # ------------------------------------------------------------ array-like
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    dtype = np.dtype(np.float32)  # what reads return

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.index is None else len(self.index)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return self.read(np.array([key % n]))[0]
        if isinstance(key, slice):
            return self.read(np.arange(len(self))[key])
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self._view(index=self._global(idx.astype(np.int64)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def map(self, transform: Callable[[np.ndarray], np.ndarray]) -> "DiskArray":
        """A view whose reads pass through ``transform`` (after any earlier one)."""
        inner = self.transform
        fn = transform if inner is None else (lambda a: transform(inner(a)))
        return self._view(transform=fn)

    def _view(self, **changes: Any) -> "DiskArray":
        kw = dict(index=self.index, transform=self.transform, files=self.files)
        kw.update(changes)
        return DiskArray(self.parts, self.row_shape, self.stored_dtype, self.name, **kw)

    def _global(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.index is None else self.index[positions]

    @property
    def float_bytes(self) -> int:
        """Bytes of the whole view as float32 (what reading it all would take)."""
        return self.size * 4

    # ------------------------------------------------------------ reading
    def read(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` of this view: float32 (n, C, *spatial), transformed."""
        out = self._read_rows(self._global(np.asarray(positions, dtype=np.int64)))
        return out if self.transform is None else self.transform(out)

    def chunks(self, chunk_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, rows) over the view in order, about ``chunk_bytes`` at a time
        (default: ``CHUNK_BYTES``, read when called, so a test may lower it)."""
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        per_row = max(1, int(np.prod(self.sample_shape)) * 4)
        step = max(1, chunk_bytes // per_row)
        for start in range(0, len(self), step):
            yield start, self.read(np.arange(start, min(start + step, len(self))))

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stored rows (global numbers) as float32, sorted runs read with one call each.

        One buffer of the batch's size: float32 rows asked for in order (chunks, prediction)
        are read straight into the result; others are read in order into a buffer of the
        stored dtype and scattered (and cast) into the result."""
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        out = np.empty((len(rows), *self.row_shape), dtype=np.float32)
        in_order = bool((order == np.arange(len(rows))).all())
        buf = out if in_order and self.stored_dtype == np.float32 else \
            np.empty((len(rows), *self.row_shape), dtype=self.stored_dtype)
        part_of = np.searchsorted(self.starts, srt, side="right") - 1
        # a run: consecutive rows of one part
        breaks = np.flatnonzero((np.diff(srt) != 1) | (np.diff(part_of) != 0)) + 1
        row_bytes = int(np.prod(self.row_shape)) * self.stored_dtype.itemsize
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(srt)]):
            if a == b:
                continue
            source, offset, _ = self.parts[part_of[a]]
            first = int(srt[a] - self.starts[part_of[a]])
            if isinstance(source, str):
                self._pread(source, offset + first * row_bytes, buf[a:b])
            else:  # an array (np.memmap): its own slicing reads
                buf[a:b] = source[first: first + (b - a)]
        if buf is not out:
            out[order] = buf  # (n, *row_shape): back to the asked order, cast to float32
        return out.reshape(len(rows), *self.sample_shape)

    def _pread(self, path: str, offset: int, into: np.ndarray) -> None:
        view = memoryview(into.reshape(-1).view(np.uint8))
        fd, done = self.files.fd(path), 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise DataError(f"{path} ends before its header says (at byte {offset + done}); "
                                "it may be truncated: save it again with numpy.save")
            done += n


# ----------------------------------------------------------------------------- opening


def open_npy(path: Path, what: str | None = None) -> DiskArray:
    """One ``.npy`` file of inputs (N, L), (N, C, L) or (N, C, H, W), checked, not read."""
    return _open_parts([Path(path)], what or Path(path).name, need_rows=False)  # predict says


def _header(path: Path, what: str) -> tuple[np.memmap, int]:
    """The file's memmap (header only: nothing is read) and its data offset."""
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "object" in str(e) or "pickle" in str(e):
            raise DataError(f"{what} holds pickled (object) data, which transmodal never loads; "
                            "save plain numeric arrays with numpy.save") from None
        raise DataError(f"{what} is not a readable .npy file ({e}); it may be truncated: save it "
                        "again with numpy.save") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{what} is not a readable .npy file ({type(e).__name__}); save it again "
                        "with numpy.save") from None
    if not isinstance(mm, np.memmap):
        raise DataError(f"{what} is not a single .npy array; save it with numpy.save")
    if mm.ndim > 1 and not mm.flags.c_contiguous:
        raise DataError(f"{what} is stored in Fortran order, which cannot be read row by row; save "
                        "it with numpy.save(path, numpy.ascontiguousarray(x))")
    return mm, int(mm.offset)


def _open_parts(paths: list[Path], what: str, need_rows: bool = True) -> DiskArray:
    parts, first = [], None
    for p in paths:
        mm, offset = _header(p, f"{what} ({p.name})" if len(paths) > 1 else what)
        if mm.dtype.kind not in "biuf":
            raise DataError(f"{what}: {p.name} holds {mm.dtype} values; inputs must be numbers "
                            "(bool, integer or float)")
        if mm.ndim not in (2, 3, 4):
            raise DataError(f"{what}: {p.name} has shape {mm.shape}; expected (N, L), (N, C, L) or "
                            "(N, C, H, W)")
        if first is None:
            first = (p, mm.shape[1:], mm.dtype)
        elif (mm.shape[1:], mm.dtype) != first[1:]:
            raise DataError(f"{what}: shard {p.name} holds samples {mm.shape[1:]} of {mm.dtype} but "
                            f"{first[0].name} holds {first[1]} of {first[2]}; every shard needs the "
                            "same sample shape and dtype")
        parts.append((str(p), offset, int(mm.shape[0])))
        del mm
    arr = DiskArray(parts, first[1], first[2], what)
    if need_rows and len(arr) == 0:
        raise DataError(f"{what} has zero samples; give at least a few labelled samples")
    if 0 in arr.sample_shape:
        raise DataError(f"{what} has shape {arr.shape}: every sample is empty; give each sample "
                        "at least one value per channel")
    return arr


def from_memmap(x: np.memmap) -> DiskArray:
    """A user's ``np.memmap`` (e.g. ``np.load(path, mmap_mode="r")``) as rows read on demand.

    A whole mapping of a file (not a slice or other view of one, not copy-on-write) is read
    from its file with ``preadv`` like a data folder (see the module note: pages read through
    the mapping would count in the resident memory until the kernel takes them back); any
    other memmap is read through its own slicing."""
    if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4):
        raise DataError(f"the memory-mapped input holds {x.dtype} of shape {x.shape}; expected "
                        "numbers shaped (N, L), (N, C, L) or (N, C, H, W)")
    whole_file = (isinstance(x.base, mmap.mmap) and x.filename is not None and x.mode != "c"
                  and x.flags.c_contiguous)
    source = (str(x.filename), int(x.offset)) if whole_file else (x, 0)
    return DiskArray([(*source, int(x.shape[0]))], x.shape[1:], x.dtype, "memory-mapped input")


def _files_of(folder: Path, stem: str) -> list[Path] | None:
    """``stem.npy``, or the ``.npy`` shards of folder ``stem/`` in name order; None if neither."""
    single, shards = folder / f"{stem}.npy", folder / stem
    if single.is_file():
        return [single]
    if shards.is_dir():
        files = sorted(shards.glob("*.npy"))
        if not files:
            raise DataError(f"{shards} holds no .npy files; write the shards there with "
                            "numpy.save (000.npy, 001.npy, ...)")
        return files
    return None


def _labels(paths: list[Path], what: str) -> np.ndarray:
    parts = []
    for p in paths:
        try:
            parts.append(np.load(p, allow_pickle=False))
        except ValueError as e:
            reason = ("pickled (object) data, which transmodal never loads; save plain numeric or "
                      "string arrays with numpy.save") if "pickle" in str(e) else f"unreadable data ({e})"
            raise DataError(f"{what} ({p.name}) holds {reason}") from None
        except (OSError, EOFError) as e:
            raise DataError(f"{what} ({p.name}) is not a readable .npy file ({type(e).__name__})") from None
    try:
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
    except ValueError as e:
        raise DataError(f"{what}: the label shards do not join ({e})") from None


def load_npy_folder(folder: Path) -> Any:
    """The :class:`Dataset` of a data folder (see the module note); inputs stay on disk."""
    from .arrays import check_labels
    from .sources import Dataset

    x_files = _files_of(folder, "x_train")
    if x_files is None:
        raise DataError(f"{folder} is a folder without x_train.npy (or an x_train/ folder of .npy "
                        "shards): save the inputs there with numpy.save (README, \"Data rules\"), or "
                        f"for an image folder (one sub-folder per class) use --data folder:{folder}")
    splits = {}
    for split in ("train", "test"):
        xs, ys = _files_of(folder, f"x_{split}"), _files_of(folder, f"y_{split}")
        if split == "test" and xs is None and ys is None:
            break
        if ys is None or xs is None:
            have, missing = (f"x_{split}", f"y_{split}") if ys is None else (f"y_{split}", f"x_{split}")
            raise DataError(f"{folder} has {have} but no {missing}.npy (nor a {missing}/ folder of "
                            "shards); give both or neither")
        x = _open_parts(xs, f"{folder.name}/x_{split}")
        y = _labels(ys, f"{folder.name}/y_{split}")
        if y.ndim == 0 or len(x) != len(y):
            shards = f" in {len(xs)} shards" if len(xs) > 1 else ""
            raise DataError(f"{folder.name}: x_{split} has {len(x)} samples{shards} but y_{split} has "
                            f"{y.size if y.ndim == 0 else len(y)}; they must match")
        check_labels(y)
        splits[split] = (x, y)
    if "test" in splits and splits["test"][0].sample_shape != splits["train"][0].sample_shape:
        raise DataError(f"{folder.name}: x_test samples are {splits['test'][0].sample_shape} but "
                        f"x_train samples are {splits['train'][0].sample_shape}; they must match")
    x_te, y_te = splits.get("test", (None, None))
    return Dataset(*splits["train"], x_te, y_te, name=folder.name)


# ----------------------------------------------------------------------------- fitting


def streamed(*arrays: Any) -> bool:
    """True when any of ``arrays`` stays on disk (then fit streams)."""
    return any(isinstance(a, DiskArray) for a in arrays)


def check_finite(x: DiskArray, what: str, chunk_bytes: int | None = None) -> None:
    """One pass: NaN or inf anywhere is the same clear error as for arrays in memory."""
    for start, chunk in x.chunks(chunk_bytes):
        _finite(chunk, start, what)


def _finite(chunk: np.ndarray, start: int, what: str) -> None:
    if not np.isfinite(chunk).all():
        bad = int(np.argwhere(~np.isfinite(chunk))[0][0]) + start
        raise DataError(f"{what} contains NaN or inf (first at sample {bad}); fill or drop those "
                        "values first")


def channel_stats(x: DiskArray, chunk_bytes: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-channel mean and (population) std in float64, and the min and max, in one pass.

    Chan et al.'s pairwise merge of per-chunk (count, mean, M2) (what numpy's float64 mean/std
    give for one chunk): equal to the in-memory statistics to ~1e-15 relative. Non-finite
    values raise the usual error."""
    axes = (0,) + tuple(range(2, x.ndim))
    n, mean, m2 = 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    low, high = np.inf, -np.inf
    for start, chunk in x.chunks(chunk_bytes):
        _finite(chunk, start, x.name)
        nb = chunk.size // chunk.shape[1]
        mb = chunk.mean(axis=axes, dtype=np.float64)
        dev = chunk - mb.reshape((1, -1) + (1,) * (chunk.ndim - 2))  # float64, like the chunk
        m2b = np.square(dev, out=dev).sum(axis=axes)  # in place: one temporary, not two
        delta, total = mb - mean, n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta ** 2 * (n * nb / total)
        n = total
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return mean, np.sqrt(m2 / n), low, high


def prepare_streamed(ds: Any, tr: np.ndarray, va: np.ndarray, task: Any, image_norm: str,
                     chunk_bytes: int | None = None) -> tuple[Any, Any, Any, Any]:
    """(preprocessor, x_train, x_val, x_test) for data on disk: the statistics from one pass
    over the training split (data that fit one chunk: read once and fitted exactly as in
    memory, so the result is bit-identical), the splits as lazy views normalised per read."""
    from .preprocess import Preprocessor

    chunk_bytes = chunk_bytes or CHUNK_BYTES

    def normalise(rows: np.ndarray) -> np.ndarray:  # rows: a fresh read, overwritten
        return pre.transform_x(rows, overwrite=True)

    x_all = as_disk(ds.x_train)
    x_tr = x_all[tr]
    if x_tr.float_bytes <= chunk_bytes:
        pre = Preprocessor.fit(_checked(x_tr), ds.y_train[tr], task, image_norm=image_norm)
    else:
        mean, std, low, high = channel_stats(x_tr, chunk_bytes)
        pre = Preprocessor.from_stats(x_tr, ds.y_train[tr], task, mean, std, (low, high),
                                      image_norm=image_norm)
    check_finite(x_all[va], x_all.name, chunk_bytes)
    x_te = None
    if ds.x_test is not None:
        x_te = as_disk(ds.x_test)
        check_finite(x_te, "the test inputs", chunk_bytes)
        pre.check_x_shape(x_te)  # grid and channels now, not after training
        x_te = x_te.map(normalise)
    return pre, x_tr.map(normalise), x_all[va].map(normalise), x_te


def _checked(x: DiskArray) -> np.ndarray:
    arr = np.asarray(x)
    _finite(arr, 0, x.name)
    return arr


def as_disk(x: Any) -> DiskArray:
    """A DiskArray of a DiskArray or a numpy array (memory-mapped or not)."""
    if isinstance(x, DiskArray):
        return x
    if isinstance(x, np.memmap):
        return from_memmap(x)
    x = np.asarray(x)
    return DiskArray([(x, 0, len(x))], x.shape[1:], x.dtype, "inputs")


def bounded_sample(x: Any, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The align stage's inputs in memory: all of ``x`` when small (as in memory), else a
    seeded class-stratified sample of at most ALIGN_MAX_ROWS rows / ALIGN_MAX_BYTES, and a
    note saying so."""
    if not isinstance(x, DiskArray):
        return x, labels, None
    per_row = max(1, int(np.prod(x.sample_shape)) * 4)
    limit = min(ALIGN_MAX_ROWS, ALIGN_MAX_BYTES // per_row)
    if len(x) <= limit:
        return np.asarray(x), labels, None
    from sklearn.model_selection import train_test_split

    counts = np.unique(labels, return_counts=True)[1]
    strat = labels if counts.min() >= 2 else None
    rows, _ = train_test_split(np.arange(len(x)), train_size=limit, random_state=seed, stratify=strat)
    rows = np.sort(rows)
    return (x.read(rows), labels[rows],
            f"the align stage used a class-stratified sample of {limit} of the {len(x)} training "
            "samples (data on disk: the stage holds its samples in memory)")


__all__ = ["DiskArray", "open_npy", "from_memmap", "load_npy_folder", "streamed",
           "channel_stats", "check_finite", "prepare_streamed", "as_disk", "bounded_sample"]
