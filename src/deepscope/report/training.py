"""Figures of a training run: loss and accuracy per epoch (reads a ``train`` Result)."""
from __future__ import annotations

from deepscope.result import Result

__all__ = ["plot_training"]


def plot_training(result: Result):
    """Train/test loss (log scale) and accuracy against epoch."""
    from matplotlib.figure import Figure

    h = result.table
    has_acc = "train_acc" in h and h["train_acc"].notna().any()
    fig = Figure(figsize=(9 if has_acc else 5, 3.4))
    ax = fig.add_subplot(1, 2 if has_acc else 1, 1)
    for split in ("train", "test"):
        col = f"{split}_loss"
        if col in h:
            ax.plot(h["epoch"], h[col], marker=".", label=split)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=.3)
    if has_acc:
        ax2 = fig.add_subplot(1, 2, 2)
        for split in ("train", "test"):
            col = f"{split}_acc"
            if col in h:
                ax2.plot(h["epoch"], h[col], marker=".", label=split)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("accuracy")
        ax2.legend()
        ax2.grid(alpha=.3)
    fig.tight_layout()
    return fig
