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
