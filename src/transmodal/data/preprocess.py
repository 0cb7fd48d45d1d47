"""Preprocessor: everything learned from the training split that predict must apply again.

Per-channel input statistics, the variable-length rule and the task's target encoding (class
list or target scaling, owned by the task: ``tasks/``) are stored as plain JSON with the model,
so a loaded run transforms new data exactly as the training data was transformed. The JSON
record is flat (``task``, ``input_shape``, ..., ``classes``, ``y_mean``, ...), as written since
the first version, so older model folders load unchanged.

Pixel scaling for CNN image bodies (``image_norm="unit"``): images come as 0..255 (image
folders, 8-bit), 0..16 (scikit-learn digits), 0..1 floats or anything else, so no fixed divisor
fits all. The rule: black is 0 (or the training minimum, if that is negative), white is the
training maximum, both over all channels at once (colour balance is kept); pixels are mapped
linearly to [0, 1] with them, with no clipping, so unseen brighter test pixels stay monotone.
An 8-bit folder almost always holds a 255 somewhere, and digits reach 16, so both land where
an ImageNet model expects them. The model then applies the ImageNet mean/std (``models/image_input.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .arrays import resample_to

# record fields of the target encoding written by earlier versions for every task (kept, so
# every record has the same keys whatever the task)
BLOCK_ELEMENTS = 2**19  # values normalised at once by transform_x (4 MiB as float64)

_TARGET_DEFAULTS: dict[str, Any] = {"classes": [], "y_mean": [], "y_std": [], "y_shape": []}


@dataclass
class Preprocessor:
    target: Any  # a fitted Task (tasks/): encodes labels, decodes raw outputs
    input_shape: list[int]  # (C, *spatial) the model was built for
    x_mean: list[float]  # per channel
    x_std: list[float]
    variable_length: bool = False  # resample 1D inputs of another length to input_shape[-1]
    image_norm: str = "channel"  # "channel": per-channel training statistics; "unit": CNN bodies
    pixel_range: list[float] | None = None  # "unit": [black, white] (see above)
    feature_names: list[str] | None = None  # tables: feature columns, matched by name (columns.py)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, task: Any, variable_length: bool = False,
            image_norm: str = "channel", feature_names: list[str] | None = None) -> "Preprocessor":
        """Input statistics of ``x``; ``task`` (an unfitted Task) learns its target encoding."""
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        low_high = (float(x.min()), float(x.max())) if image_norm == "unit" else None
        return cls.from_stats(x, y, task, mean, std, low_high, variable_length, image_norm,
                              feature_names)

    @classmethod
    def from_stats(cls, x: Any, y: np.ndarray, task: Any, mean: np.ndarray, std: np.ndarray,
                   low_high: tuple[float, float] | None, variable_length: bool = False,
                   image_norm: str = "channel", feature_names: list[str] | None = None
                   ) -> "Preprocessor":
        """From statistics computed elsewhere (a streaming pass over data on disk,
        ``stream.py``); ``x`` is only asked for its shape."""
        std = np.where(std > 1e-8, std, 1.0)
        p = cls(task, list(x.shape[1:]), mean.tolist(), std.tolist(), variable_length,
                image_norm=image_norm, pixel_range=[], feature_names=feature_names)
        if image_norm == "unit":
            low, high = min(0.0, low_high[0]), low_high[1]
            if not high > low:
                raise DataError(f"every training pixel has the value {high:g}: the images are blank")
            p.pixel_range = [low, high]
        elif image_norm != "channel":
            raise DataError(f"unknown image_norm {image_norm!r}; use 'channel' or 'unit'")
        task.fit_targets(x, y)
        return p

    @property
    def task(self) -> str:
        return self.target.name

    # ---------------------------------------------------------------- x
    def transform_x(self, x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        """Check the grid and channels, apply the length rule, then normalise.

        ``overwrite``: ``x`` is a scratch buffer the caller drops (rows just read from disk):
        a float32 ``x`` receives the result, so a batch costs one buffer, not two."""
        if self.check_x_shape(x):
            x = np.stack([resample_to(s, self.input_shape[-1]) for s in x])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.image_norm == "unit":  # [0, 1]; the model applies the ImageNet mean/std
            low, high = self.pixel_range
            shift, scale = low, high - low
        else:
            shift = np.asarray(self.x_mean).reshape(shape)
            scale = np.asarray(self.x_std).reshape(shape)
        # float arithmetic, cast to float32, a block of rows at a time: the same values as
        # ((x - shift) / scale).astype(float32) on the whole array (elementwise), with
        # temporaries of BLOCK_ELEMENTS values instead of two float64 copies of the whole input
        # (a batch read from disk, or all the training data)
        reuse = overwrite and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable
        out = x if reuse else np.empty(x.shape, dtype=np.float32)  # (N, C, *spatial)
        step = max(1, BLOCK_ELEMENTS // max(1, int(np.prod(x.shape[1:]))))
        for i in range(0, len(x), step):
            block = np.subtract(x[i: i + step], shift)  # numpy's promotion, as before
            np.divide(block, scale, out=block)
            out[i: i + step] = block
        return out

    def check_x_shape(self, x: Any) -> bool:
        """Inputs fit the training grid and channels (one clear error otherwise); True when
        they are series of another length to resample (the variable-length rule)."""
        if x.ndim != len(self.input_shape) + 1:
            raise DataError(
                f"input has {x.ndim - 1} dims per sample {tuple(x.shape[1:])}; "
                f"the model was trained on {tuple(self.input_shape)}"
            )
        if x.shape[1] != self.input_shape[0]:
            raise DataError(
                f"input has {x.shape[1]} channels; the model was trained on {self.input_shape[0]}: "
                f"give inputs shaped (N, {', '.join(map(str, self.input_shape))}) like the training data"
            )
        if list(x.shape[2:]) != self.input_shape[1:]:
            if self.variable_length and x.ndim == 3:
                return True
            raise DataError(
                f"input grid {tuple(x.shape[2:])} differs from the training grid "
                f"{tuple(self.input_shape[1:])}; resample or crop your data to that size"
            )
        return False

    # ---------------------------------------------------------------- y (the task's business)
    def transform_y(self, y: np.ndarray) -> np.ndarray:
        """Labels to training targets (class indices int64, standardised float32 values)."""
        return self.target.encode(y)

    def inverse_y(self, out: np.ndarray) -> np.ndarray:
        """Raw model outputs back to label values / physical units, shaped like the training y."""
        return self.target.decode(out)

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "input_shape": self.input_shape, "x_mean": self.x_mean,
                "x_std": self.x_std, "variable_length": self.variable_length,
                **_TARGET_DEFAULTS, **self.target.state(), "image_norm": self.image_norm,
                "pixel_range": self.pixel_range, "feature_names": self.feature_names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessor":
        from ..tasks import task_from_state

        return cls(task_from_state(d), list(d["input_shape"]), d["x_mean"], d["x_std"],
                   d.get("variable_length", False), d.get("image_norm", "channel"),
                   d.get("pixel_range", []), d.get("feature_names"))  # older records: None
