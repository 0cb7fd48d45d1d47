"""PNG plots for the run folder (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_learning_curves(history: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Train/validation loss and the validation metric per refine epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history if r.get("stage") == "refine"]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ax1.plot(epochs, [r["val_loss"] for r in rows], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(epochs, [r[f"val_{metric}"] for r in rows], color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"validation {metric}")
    fig.suptitle("refine stage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_alignment(aligned: dict[str, Any], folder: Path) -> None:
    """Distance per align epoch, and a 2-D PCA of target vs source features before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    hist = aligned["history"]
    if hist:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot([r["epoch"] for r in hist], [r["distance"] for r in hist], marker=".")
        ax.set_xlabel("align epoch")
        ax.set_ylabel(f"{hist[0]['method']} distance to source")
        fig.tight_layout()
        fig.savefig(folder / "align_distance.png", dpi=100)
        plt.close(fig)
    src = aligned["source"].numpy()
    panels = [(name, aligned[name].numpy()) for name in ("before", "after") if aligned.get(name) is not None]
    mean = src.mean(0)
    _, _, vt = np.linalg.svd(src - mean, full_matrices=False)  # PCA fitted on the source
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, tgt) in zip(axes[0], panels):
        s2 = (src - mean) @ vt[:2].T
        t2 = (tgt - mean) @ vt[:2].T
        ax.scatter(s2[:, 0], s2[:, 1], s=4, alpha=0.3, color="grey", label="source reference")
        ax.scatter(t2[:, 0], t2[:, 1], s=10, c=aligned["target_labels"], cmap="tab10", label="target")
        ax.set_title(f"{name} alignment")
        ax.set_xlabel("PC 1 (source)")
        ax.set_ylabel("PC 2 (source)")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "align_embedding.png", dpi=100)
    plt.close(fig)
