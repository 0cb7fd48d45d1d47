"""PNG plots for the run folder (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: list[dict[str, Any]], metric: str, path: Path,
                         best_epoch: int | None = None) -> None:
    """Train/validation loss, the validation metric and the learning rates per refine epoch;
    the chosen (best validation) epoch is marked."""
    plt = pyplot()
    rows = [r for r in history if r.get("stage") == "refine"]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ax1.plot(epochs, [r["val_loss"] for r in rows], label="validation")
    ax1.set_ylabel("loss")
    if all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in rows):
        ax1.set_yscale("log")
    ax2.plot(epochs, [r[f"val_{metric}"] for r in rows], color="C2")
    ax2.set_ylabel(f"validation {metric}")
    body, head = [r.get("lr") for r in rows], [r.get("head_lr") for r in rows]
    if None in head or head == body:  # runs from before head_lr was logged, or one rate
        ax3.plot(epochs, body, color="C4", label="lr (every group)" if head == body else "lr")
    else:
        ax3.plot(epochs, body, color="C4", label="body lr")
        ax3.plot(epochs, head, color="C5", label="embedder + head lr")
    ax3.set_ylabel("learning rate (end of epoch)")
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("epoch")
        if best_epoch is not None and best_epoch > 0:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"chosen epoch {best_epoch}")
    ax1.legend(fontsize=8)
    fig.suptitle("refine stage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_alignment(aligned: dict[str, Any], folder: Path, class_names: list[Any] | None = None) -> None:
    """Distance per align epoch, and a 2-D PCA of target vs source features before/after,
    the target coloured by class (``class_names[i]`` names class id i; pseudo-labels of
    regression and dense targets are shown as clusters)."""
    import numpy as np

    plt = pyplot()
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
        labels = np.asarray(aligned["target_labels"])
        for i, k in enumerate(np.unique(labels)):
            tag = class_names[k] if class_names and 0 <= k < len(class_names) else f"cluster {k}"
            pick = labels == k
            ax.scatter(t2[pick, 0], t2[pick, 1], s=10, color=plt.get_cmap("tab10")(i % 10),
                       label=f"target: {tag}" if i < 12 else None)  # legend: 12 classes at most
        ax.set_title(f"{name} alignment")
        ax.set_xlabel("PC 1 (source)")
        ax.set_ylabel("PC 2 (source)")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "align_embedding.png", dpi=100)
    plt.close(fig)
