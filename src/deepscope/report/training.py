"""Figures of a training run: loss and accuracy per epoch (reads a ``train`` Result)."""
from __future__ import annotations

from deepscope.result import Result

__all__ = ["plot_training"]


def plot_training(result: Result):
    """Train/test loss (log scale) and accuracy against epoch."""
    from matplotlib.figure import Figure

    h = result.table
    has_acc = "train_acc" in h and h["train_acc"].notna().any()
    panels = [("loss", "log")] + ([("acc", "linear")] if has_acc else [])
    fig = Figure(figsize=(9 if has_acc else 5, 3.4))
    for i, (metric, scale) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for split in ("train", "test"):
            col = f"{split}_{metric}"
            if col in h:
                ax.plot(h["epoch"], h[col], marker=".", label=split)
        ax.set_yscale(scale)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if metric == "loss" else "accuracy")
        ax.legend()
        ax.grid(alpha=.3)
    fig.tight_layout()
    return fig
