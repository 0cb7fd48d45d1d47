"""Rivals: the cheap baselines a run can keep beside its transformer (``--method auto``).

A demanding user asks whether the 22 M-parameter body earned its cost; ``--method auto``
answers it on the training data alone. MiniRocket (series) and the linear baseline are fitted
inside the same folds as the transformer; their out-of-fold outputs and the transformer's are
compared and blended (:func:`choose_blend`), and the winner (or the blend) is what the run
predicts with.

A rival is fitted with aeon / scikit-learn, then kept as plain arrays (MiniRocket's kernels'
dilations and biases, the scaler, the linear coefficients) and applied with numpy: the run
folder holds ``rival/arrays.npz`` (read with ``allow_pickle=False``) and ``rival/rival.json``.
Its outputs live in the task's raw-output space (classification: logits, temperature-scaled on
out-of-fold predictions so its probabilities blend with the transformer's; regression: values
in the standardised target units), so ``Task.mix`` combines them with the members'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

RIVALS = ("minirocket", "linear")
BLEND_STEPS = 10  # the transformer's weight is searched on 0, 0.1, ..., 1
TEMPERATURES = np.logspace(-2, 3, 61)  # candidate logit scales for the rivals' probabilities


def rival_names(x: np.ndarray, task: Any) -> list[str]:
    """The rivals that apply to inputs ``x`` (N, C, ...) and ``task``: MiniRocket for series
    of classes or values (not per-position targets), the linear baseline always."""
    from ..bench.baselines import MiniRocketBaseline

    names = ["linear"]
    if x.ndim == 3 and MiniRocketBaseline.skip_reason(task.name) is None:
        names.insert(0, "minirocket")
    return names


class Rival:
    """One fitted baseline as arrays: ``features`` (MiniRocket or none) -> standardise -> linear map."""

    def __init__(self, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.name, self.arrays, self.meta = name, arrays, meta

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, name: str, x: np.ndarray, y_enc: np.ndarray, classify: bool, seed: int,
            temperature: float = 1.0) -> "Rival":
        """Fit on raw inputs ``x`` (N, C, ...) and encoded targets (class ids (N,), or values
        (N, ...)); ``classify`` says which."""
        from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
        from sklearn.preprocessing import StandardScaler

        from ..bench.baselines import RIDGE_ALPHAS, _UnitNorm

        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"classify": classify, "temperature": float(temperature),
                                "target_shape": list(y_enc.shape[1:])}
        if name == "minirocket":
            feats = _minirocket_fit(x, seed, arrays, meta)  # (N, F)
            scaler: Any = _UnitNorm().fit(feats)  # centred, unit l2 norm per feature (the papers')
            head: Any = RidgeClassifierCV(alphas=RIDGE_ALPHAS) if classify else RidgeCV(alphas=RIDGE_ALPHAS)
        elif name == "linear":
            feats = x.reshape(len(x), -1).astype(np.float64)
            scaler = StandardScaler().fit(feats)
            head = LogisticRegression(max_iter=5000) if classify else RidgeCV(alphas=RIDGE_ALPHAS)
        else:
            raise ConfigError(f"unknown rival {name!r}; choose one of {', '.join(RIVALS)}")
        mean, scale = scaler.mean_, scaler.scale_
        target = y_enc if classify else y_enc.reshape(len(y_enc), -1)
        head.fit((feats - mean) / scale, target)
        coef = np.atleast_2d(head.coef_)  # (K or 1, F)
        arrays.update(mean=mean, scale=scale, coef=coef, intercept=np.atleast_1d(head.intercept_))
        if classify:
            meta["n_classes"] = int(len(head.classes_))
        return cls(name, arrays, meta)

    # ------------------------------------------------------------------ applying
    def decision(self, x: np.ndarray) -> np.ndarray:
        """Unscaled outputs: class scores (N, K) or values (N, *target_shape)."""
        a = self.arrays
        feats = (_minirocket_transform(x, a) if self.name == "minirocket"
                 else x.reshape(len(x), -1).astype(np.float64))
        out = ((feats - a["mean"]) / a["scale"]) @ a["coef"].T + a["intercept"]  # (N, K or 1)
        if not self.meta["classify"]:
            return out.reshape((len(x), *self.meta["target_shape"]))
        if out.shape[1] == 1 and self.meta["n_classes"] == 2:  # binary: one score for class 1
            out = np.concatenate([np.zeros_like(out), out], axis=1)  # softmax = sigmoid(score)
        return out

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs in the task's space (logits for classes, standardised values)."""
        d = self.decision(x)
        return (self.meta["temperature"] * d if self.meta["classify"] else d).astype(np.float32)

    # ------------------------------------------------------------------ storage (no pickle)
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "arrays.npz", **self.arrays)
        (folder / "rival.json").write_text(json.dumps({"name": self.name, **self.meta}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "Rival":
        meta = json.loads((folder / "rival.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(meta.pop("name"), arrays, meta)


# ---------------------------------------------------------------------- MiniRocket as arrays
_MR_PARTS = ("n_channels_per_combination", "channel_indices", "dilations",
             "n_features_per_dilation", "biases")
def _series(x: np.ndarray) -> np.ndarray:
    """(N, C, L) float32, short series zero-padded to MiniRocket's kernel length (the bench's rule)."""
    from ..bench.baselines import MiniRocketBaseline

    return MiniRocketBaseline()._series(x)


def _minirocket_fit(x: np.ndarray, seed: int, arrays: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> np.ndarray:
    """Fit aeon's MiniRocket; its fitted parameters go into ``arrays``; returns the features."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    from ..bench.baselines import _keep_numba_off_openmp

    _keep_numba_off_openmp()  # DESIGN.md: numba must stay off OpenMP beside torch
    mr = MiniRocket(random_state=seed, n_jobs=1)
    feats = mr.fit_transform(_series(x))
    arrays.update({f"mr_{k}": np.asarray(v) for k, v in zip(_MR_PARTS, mr.parameters)})
    meta["n_kernels"] = int(mr.n_kernels_)
    return np.asarray(feats, dtype=np.float64)


def _minirocket_transform(x: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """MiniRocket features of ``x`` with stored parameters (aeon's own transform kernels)."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    from ..bench.baselines import _keep_numba_off_openmp

    _keep_numba_off_openmp()
    mr = MiniRocket(n_jobs=1)
    mr.parameters = tuple(arrays[f"mr_{k}"] for k in _MR_PARTS)
    mr._n_jobs = 1
    return np.asarray(mr._transform(_series(x)), dtype=np.float64)  # (N, F)


# ---------------------------------------------------------------------- out-of-fold comparison
def out_of_fold(name: str, x: np.ndarray, y_enc: np.ndarray, classify: bool,
                folds: list[tuple[np.ndarray, np.ndarray]], seed: int) -> tuple[np.ndarray, float]:
    """The rival's out-of-fold raw outputs (N, ...) over ``folds`` (train, validation index
    pairs covering every sample once) and the temperature fitted on them (1 for values)."""
    decisions: np.ndarray | None = None
    for tr, va in folds:
        d = Rival.fit(name, x[tr], y_enc[tr], classify, seed).decision(x[va])
        if decisions is None:
            decisions = np.zeros((len(x), *d.shape[1:]))
        decisions[va] = d
    assert decisions is not None
    if not classify:
        return decisions.astype(np.float32), 1.0
    t = fit_temperature(decisions, y_enc)
    return (t * decisions).astype(np.float32), t


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The logit scale with the least out-of-fold log-loss (temperature scaling): ridge scores
    are not probabilities, and a blend needs comparable ones."""
    def nll(t: float) -> float:
        z = t * scores
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    return float(min(TEMPERATURES, key=nll))


def choose_blend(task: Any, y_true: np.ndarray, y_enc: np.ndarray, model_oof: np.ndarray,
                 rival_oof: dict[str, np.ndarray]) -> dict[str, Any]:
    """Compare the transformer with each rival, and their blends, on out-of-fold outputs.

    Candidates: the transformer's weight w in 0, 0.1, ..., 1 against each rival (w = 1: the
    transformer alone; w = 0: the rival alone). The best primary score wins; ties go to the
    lower out-of-fold loss, then to the larger transformer weight. Returns the choice and every
    candidate's out-of-fold score (the user learns by how much each one won or lost).
    """
    import torch

    metric, higher = task.primary
    sign = 1.0 if higher else -1.0
    target = torch.from_numpy(y_enc)

    def evaluate(raw: np.ndarray) -> tuple[float, float]:
        score = task.score(y_true, task.decode(raw))[metric]
        loss = float(task.loss(torch.from_numpy(raw), target))
        return score, loss

    model_score, model_loss = evaluate(model_oof)
    best = {"rival": None, "model_weight": 1.0, metric: model_score, "loss": model_loss}
    scores = {"model": model_score}
    for name, oof in rival_oof.items():
        for step in range(BLEND_STEPS):  # w = 0 .. 0.9 (w = 1 is the transformer alone)
            w = step / BLEND_STEPS
            raw = task.mix([model_oof, oof], [w, 1.0 - w])
            score, loss = evaluate(raw)
            if step == 0:
                scores[name] = score
            key = (sign * score, -loss, w)
            if key > (sign * best[metric], -best["loss"], best["model_weight"]):
                best = {"rival": name, "model_weight": w, metric: score, "loss": loss}
    return {**best, "metric": metric, "out_of_fold": scores}


def describe_choice(choice: dict[str, Any]) -> str:
    """One line for the user: which won, by how much, out-of-fold on the training data."""
    metric, oof = choice["metric"], choice["out_of_fold"]
    others = ", ".join(f"{k} {v:.4f}" for k, v in oof.items())
    w = choice["model_weight"]
    if choice["rival"] is None:
        won = "the transformer alone"
    elif w == 0:
        won = f"{choice['rival']} alone (the transformer did not earn its cost)"
    else:
        won = f"a blend: {w:.1f} x transformer + {1 - w:.1f} x {choice['rival']}"
    return (f"--method auto chose {won}: out-of-fold {metric} {choice[metric]:.4f} "
            f"(alone: {others})")
