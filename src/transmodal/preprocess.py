"""Preprocessor: everything learned from the training split that predict must apply again.

Per-channel input statistics, the class list, target scaling and the variable-length rule
are stored as plain JSON with the model, so a loaded run transforms new data exactly as the
training data was transformed.

Pixel scaling for CNN image bodies (``image_norm="unit"``): images come as 0..255 (image
folders, 8-bit), 0..16 (scikit-learn digits), 0..1 floats or anything else, so no fixed divisor
fits all. The rule: black is 0 (or the training minimum, if that is negative), white is the
training maximum, both over all channels at once (colour balance is kept); pixels are mapped
linearly to [0, 1] with them, with no clipping, so unseen brighter test pixels stay monotone.
An 8-bit folder almost always holds a 255 somewhere, and digits reach 16, so both land where
an ImageNet model expects them. The model then applies the ImageNet mean/std (image_model.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .data import resample_to
from .errors import DataError


@dataclass
class Preprocessor:
    task: str
    input_shape: list[int]  # (C, *spatial) the model was built for
    x_mean: list[float]  # per channel
    x_std: list[float]
    variable_length: bool = False  # resample 1D inputs of another length to input_shape[-1]
    classes: list[Any] = field(default_factory=list)  # classification label values, sorted
    y_mean: list[float] = field(default_factory=list)  # regression/dense, per output
    y_std: list[float] = field(default_factory=list)
    y_shape: list[int] = field(default_factory=list)  # per-sample target shape (regression/dense)
    image_norm: str = "channel"  # "channel": per-channel training statistics; "unit": CNN bodies
    pixel_range: list[float] = field(default_factory=list)  # "unit": [black, white] (see above)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, task: str, variable_length: bool = False,
            image_norm: str = "channel") -> "Preprocessor":
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        std = np.where(std > 1e-8, std, 1.0)
        p = cls(task, list(x.shape[1:]), mean.tolist(), std.tolist(), variable_length,
                image_norm=image_norm)
        if image_norm == "unit":
            low, high = min(0.0, float(x.min())), float(x.max())
            if not high > low:
                raise DataError(f"every training pixel has the value {high:g}: the images are blank")
            p.pixel_range = [low, high]
        elif image_norm != "channel":
            raise DataError(f"unknown image_norm {image_norm!r}; use 'channel' or 'unit'")
        if task == "classification":
            p.classes = sorted(np.unique(y).tolist(), key=_sort_key)
        else:
            yf = y.astype(np.float64)
            p.y_shape = list(y.shape[1:])
            if task == "regression":
                flat = yf.reshape(len(yf), -1)  # (N, k)
                p.y_mean = flat.mean(0).tolist()
                p.y_std = np.where(flat.std(0) > 1e-8, flat.std(0), 1.0).tolist()
            else:  # dense: one scale per target channel
                yc = yf if yf.ndim == x.ndim else yf[:, None]
                ax = (0,) + tuple(range(2, yc.ndim))
                p.y_mean = yc.mean(axis=ax).tolist()
                s = yc.std(axis=ax)
                p.y_std = np.where(s > 1e-8, s, 1.0).tolist()
        return p

    # ---------------------------------------------------------------- shapes
    @property
    def n_outputs(self) -> int:
        """Classes, regression outputs, or dense output channels."""
        if self.task == "classification":
            return len(self.classes)
        if self.task == "regression":
            return int(np.prod(self.y_shape)) if self.y_shape else 1
        return len(self.y_mean)

    # ---------------------------------------------------------------- x
    def transform_x(self, x: np.ndarray) -> np.ndarray:
        """Check the grid and channels, apply the length rule, then normalise."""
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
                x = np.stack([resample_to(s, self.input_shape[-1]) for s in x])
            else:
                raise DataError(
                    f"input grid {tuple(x.shape[2:])} differs from the training grid "
                    f"{tuple(self.input_shape[1:])}; resample or crop your data to that size"
                )
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.image_norm == "unit":  # [0, 1]; the model applies the ImageNet mean/std
            low, high = self.pixel_range
            return ((x - low) / (high - low)).astype(np.float32)
        else:
            mean = np.asarray(self.x_mean).reshape(shape)
            std = np.asarray(self.x_std).reshape(shape)
        return ((x - mean) / std).astype(np.float32)

    # ---------------------------------------------------------------- y
    def transform_y(self, y: np.ndarray) -> np.ndarray:
        """Labels to class indices (int64) or standardised float32 targets."""
        if self.task == "classification":
            lookup = {c: i for i, c in enumerate(self.classes)}
            unseen = [v for v in np.unique(y).tolist() if v not in lookup]
            if unseen:
                raise DataError(
                    f"labels {unseen[:5]} were not seen in training; the model knows "
                    f"{self.classes[:20]}"
                )
            return np.asarray([lookup[v] for v in y.tolist()], dtype=np.int64)
        yf = y.astype(np.float64)
        if self.task == "regression":
            flat = yf.reshape(len(yf), -1)
            return ((flat - self.y_mean) / np.asarray(self.y_std)).astype(np.float32)
        yc = yf if yf.ndim == len(self.input_shape) + 1 else yf[:, None]
        shape = (1, -1) + (1,) * (yc.ndim - 2)
        mean = np.asarray(self.y_mean).reshape(shape)
        std = np.asarray(self.y_std).reshape(shape)
        return ((yc - mean) / std).astype(np.float32)

    def inverse_y(self, out: np.ndarray) -> np.ndarray:
        """Model outputs back to label values / physical units, shaped like the training y."""
        if self.task == "classification":
            return np.asarray(self.classes, dtype=object)[out.argmax(1)].astype(
                np.asarray(self.classes).dtype
            )
        if self.task == "regression":
            y = out * np.asarray(self.y_std) + np.asarray(self.y_mean)
            return y.reshape((len(y), *self.y_shape))
        shape = (1, -1) + (1,) * (out.ndim - 2)
        y = out * np.asarray(self.y_std).reshape(shape) + np.asarray(self.y_mean).reshape(shape)
        return y.reshape((len(y), *self.y_shape)) if self.y_shape else y

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessor":
        return cls(**d)


def _sort_key(v: Any) -> tuple:
    """Sort numbers numerically and strings alphabetically, never comparing the two."""
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
