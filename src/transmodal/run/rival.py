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
GUARD_Z = 1.64  # standard errors a candidate must beat the incumbent baseline by (one-sided 5 %)


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


def sample_losses(task: Any, raw: np.ndarray, y_enc: np.ndarray) -> np.ndarray:
    """The task's training loss of each sample alone (N,): cross-entropy for classes, squared
    error for values; the paired comparison below needs it per sample, not as a mean."""
    import torch

    out, target = torch.from_numpy(np.ascontiguousarray(raw)), torch.from_numpy(y_enc)
    return np.array([float(task.loss(out[i:i + 1], target[i:i + 1])) for i in range(len(y_enc))])


def choose_blend(task: Any, y_true: np.ndarray, y_enc: np.ndarray, model_oof: np.ndarray,
                 rival_oof: dict[str, np.ndarray]) -> dict[str, Any]:
    """Keep the strongest cheap baseline unless a candidate beats it clearly, out of fold.

    The incumbent is the first rival (MiniRocket for series, else the linear baseline: the
    published strong baseline of the field). Candidates: the transformer alone and its blends
    with each rival (transformer weight 0, 0.1, ..., 0.9). The candidate with the least
    out-of-fold loss (a proper score: it sees confidence, where accuracy on 36 samples moves in
    steps of 3 points) replaces the incumbent only when its per-sample loss advantage is larger
    than ``GUARD_Z`` standard errors (a paired one-sided test). Picking the best of 21 noisy
    candidates without that guard kept a blend that lost 11.5 points on ArrowHead's test split
    (winner's curse; README, issue 16). Returns the choice, the test's numbers, and every single
    candidate's out-of-fold score and loss (the user learns by how much each won or lost).
    """
    metric = task.primary[0]
    names = list(rival_oof)
    incumbent = names[0]
    cands: list[tuple[str | None, float, np.ndarray]] = [(None, 1.0, model_oof)]
    cands += [(n, step / BLEND_STEPS, task.mix([model_oof, rival_oof[n]],
                                              [step / BLEND_STEPS, 1.0 - step / BLEND_STEPS]))
              for n in names for step in range(BLEND_STEPS)]
    losses = [sample_losses(task, raw, y_enc) for _, _, raw in cands]  # each (N,)
    alone_at = {"model": 0, **{n: 1 + i * BLEND_STEPS for i, n in enumerate(names)}}  # weight 0
    best = min(range(len(cands)), key=lambda i: (losses[i].mean(), -cands[i][1]))
    gain = losses[alone_at[incumbent]] - losses[best]  # (N,) advantage over the incumbent
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
    pick = best if gain.mean() > GUARD_Z * se else alone_at[incumbent]
    rival, weight, raw = cands[pick]

    def score(r: np.ndarray) -> float:
        return float(task.score(y_true, task.decode(r))[metric])

    alone = {k: (cands[i][2], losses[i]) for k, i in alone_at.items()}
    return {"rival": rival, "model_weight": weight, metric: score(raw),
            "loss": float(losses[pick].mean()), "metric": metric, "incumbent": incumbent,
            "best_candidate": {"rival": cands[best][0], "model_weight": cands[best][1],
                               "loss": float(losses[best].mean())},
            "loss_gain": float(gain.mean()), "loss_gain_se": se, "guard_z": GUARD_Z,
            "out_of_fold": {k: score(v) for k, (v, _) in alone.items()},
            "out_of_fold_loss": {k: float(l.mean()) for k, (_, l) in alone.items()}}


def _candidate(rival: str | None, w: float) -> str:
    if rival is None:
        return "the transformer alone"
    if w == 0:
        return f"{rival} alone"
    return f"a blend: {w:.1f} x transformer + {1 - w:.1f} x {rival}"


def describe_choice(choice: dict[str, Any]) -> str:
    """One line for the user: which won, by how much, out-of-fold on the training data."""
    metric, oof = choice["metric"], choice["out_of_fold"]
    others = ", ".join(f"{k} {v:.4f}" for k, v in oof.items())
    best = choice["best_candidate"]
    gain = (f"out-of-fold loss {choice['loss_gain']:.4f} +- {choice['loss_gain_se']:.4f} "
            f"below {choice['incumbent']} alone's")
    kept = choice["rival"] == choice["incumbent"] and choice["model_weight"] == 0
    if kept and (best["rival"], best["model_weight"]) == (choice["incumbent"], 0.0):
        why = "no candidate had a lower out-of-fold loss"
    elif kept:
        why = (f"the best candidate, {_candidate(best['rival'], best['model_weight'])}, had an "
               f"{gain}, under the {choice['guard_z']} standard errors it must win by")
    else:
        why = f"{gain}, over {choice['guard_z']} standard errors"
    verdict = " (the transformer did not earn its cost)" if choice["model_weight"] == 0 else ""
    return (f"--method auto chose {_candidate(choice['rival'], choice['model_weight'])}{verdict}: "
            f"{why}; out-of-fold {metric} {choice[metric]:.4f} (alone: {others})")
