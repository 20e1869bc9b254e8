"""The batch-size study of Martin & Mahoney (JMLR 2021, Sec. 7; the "Why Deep Learning Works"
talk): train the same network at batch sizes from 2 to ~1000 with everything else fixed, then
read the spectra of the fully connected layers.

Published shape of the result (MiniAlexNet on CIFAR-10): the smaller the batch, the more
eigenvalues of FC1 lie outside the Marchenko-Pastur bulk (13 % at batch 4, 0 % at batch
>= 250), the lower the MP soft rank λ+/λ_max, the heavier the tail (smaller alpha), and the
smaller the generalization gap; the phases march from random-like (large batches) towards
heavy-tailed (batch 2).

Defaults that finish in minutes on 2 CPU cores: the MiniAlexNet-like CNN of
:mod:`deepscope.nets.cnn` at width 0.5 on scikit-learn's digits (1x8x8), plain SGD (no
momentum: with momentum 0.9 the batch-2 runs collapse to chance) at a constant learning rate
0.01, a fixed number of epochs (smaller batches take more
steps, as in the original study), batch sizes 2, 8, 32, 128, 512 and two seeds. Everything
runs through the sweep engine (resumable; ``engine="process"`` or ``"ray"`` to parallelize);
the spectra are measured with the ``spectra`` probe of :mod:`deepscope.sweep.probes`.

Per run: batch size, seed, train/test accuracy, gap = train_acc - test_acc, and for each
fully connected hidden layer (``fc1``, ``fc2``): the fraction of eigenvalues outside the MP
bulk (``num_spikes / num_evals``), the MP soft rank, alpha and the phase.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepscope.errors import ConfigError
from deepscope.result import Result

__all__ = ["batch_size_spec", "batch_size_study", "plot_batch_size_study"]

DEFAULT_BATCH_SIZES = (2, 8, 32, 128, 512)
_FC = ("fc1", "fc2")


def batch_size_spec(*, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                    seeds: Sequence[int] = (0, 1), arch: str = "cnn", width: float = 0.5,
                    dataset: str = "digits", n_train: int | None = None, epochs: int = 20,
                    lr: float = 0.01, momentum: float = 0.0) -> dict[str, Any]:
    """The sweep spec of the study (a dict for :func:`deepscope.sweep.run_sweep`)."""
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    if not seeds:
        raise ConfigError("seeds must list at least one seed")
    if arch == "cnn":
        arch_spec: dict[str, Any] = {"arch": "cnn", "width": float(width)}
        flat = False
    elif arch == "mlp":
        base = max(1, int(round(512 * width)))
        arch_spec = {"arch": "mlp", "widths": [base, base // 2]}
        flat = True
    else:
        raise ConfigError(f"arch must be 'cnn' or 'mlp', got {arch!r}")
    data: dict[str, Any] = {"name": dataset}
    if dataset in ("digits", "mnist1d"):
        data["flat"] = flat
    if n_train is not None:
        data["n_train"] = int(n_train)
    return {"base": {"arch": arch_spec, "data": data,
                     "train": {"optimizer": "sgd", "lr": float(lr), "momentum": float(momentum),
                               "epochs": int(epochs)}},
            "grid": {"train.batch_size": sorted({int(b) for b in batch_sizes})},
            "seeds": [int(s) for s in seeds]}


def _fc_names(table: pd.DataFrame) -> dict[str, str]:
    """Map fc1/fc2 to the row names of the model's hidden fully connected layers."""
    linear = [l for l, t in zip(table["layer"], table["type"]) if t == "Linear"]
    hidden = linear[:-1]  # the last Linear is the classifier output
    return {short: name for short, name in zip(_FC, hidden)}


def batch_size_study(zoo_dir: str | Path, *, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                     seeds: Sequence[int] = (0, 1), arch: str = "cnn", width: float = 0.5,
                     dataset: str = "digits", n_train: int | None = None, epochs: int = 20,
                     lr: float = 0.01, momentum: float = 0.0, engine: str = "local",
                     workers: int | None = None, address: str | None = None,
                     task_cpus: float = 1, task_gpus: float = 0, threads: int | None = None,
                     progress: bool = True) -> Result:
    """Run (or resume) the study in ``zoo_dir``; return one row per trained run.

    Engine options (``engine`` ... ``threads``) are those of :func:`deepscope.sweep.run_sweep`.

    ``summary["by_batch_size"]`` holds the means over seeds per batch size and
    ``summary["spearman"]`` the rank correlation of each quantity with the batch size.
    """
    from deepscope.sweep import Catalog, measure_zoo, run_sweep

    spec = batch_size_spec(batch_sizes=batch_sizes, seeds=seeds, arch=arch, width=width,
                           dataset=dataset, n_train=n_train, epochs=epochs, lr=lr,
                           momentum=momentum)
    kw = dict(engine=engine, workers=workers, address=address, task_cpus=task_cpus,
              task_gpus=task_gpus, threads=threads, progress=progress)
    sweep = run_sweep(spec, zoo_dir, **kw)
    measure_zoo(zoo_dir, ["spectra"], **kw)
    from deepscope.sweep import expand_spec
    wanted = {t.id for t in expand_spec(spec)}
    with Catalog(zoo_dir) as cat:
        runs = {r["id"]: r for r in cat.runs("done") if r["id"] in wanted}
        meas = {m["run_id"]: m for m in cat.measurements("spectra", with_tables=True)
                if m["run_id"] in runs and not m.get("error")}
    rows = []
    for run_id, run in runs.items():
        cfg, met = run["config"], run["metrics"] or {}
        row: dict[str, Any] = {"run_id": run_id, "batch_size": cfg["train"]["batch_size"],
                               "seed": cfg["train"]["seed"],
                               "train_acc": met.get("train_acc"), "test_acc": met.get("test_acc"),
                               "train_loss": met.get("train_loss"),
                               "test_loss": met.get("test_loss")}
        row["gap"] = (row["train_acc"] - row["test_acc"]
                      if row["train_acc"] is not None and row["test_acc"] is not None
                      else np.nan)
        m = meas.get(run_id)
        if m is not None:
            t = pd.DataFrame(m["table"])
            names = _fc_names(t)
            t = t.set_index("layer")
            for short, name in names.items():
                r = t.loc[name]
                n = float(r["num_evals"])
                row[f"{short}_outside_bulk"] = float(r["num_spikes"]) / n if n else np.nan
                row[f"{short}_num_spikes"] = r["num_spikes"]
                row[f"{short}_mp_softrank"] = r["mp_softrank"]
                row[f"{short}_alpha"] = r["alpha"]
                row[f"{short}_phase"] = r["phase"]
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["batch_size", "seed"]).reset_index(drop=True)
    numeric = table.drop(columns=["run_id", "seed"]).select_dtypes("number")
    by_bs = numeric.groupby(table["batch_size"]).mean(numeric_only=True)
    spearman = {}
    for col in numeric.columns:
        if col == "batch_size":
            continue
        ok = table[["batch_size", col]].dropna()
        if len(ok) >= 3 and ok[col].nunique() > 1:
            spearman[col] = float(ok["batch_size"].rank().corr(ok[col].rank()))
    summary = {"runs": len(table), "trained_now": sweep.done, "failed": sweep.failed,
               "by_batch_size": by_bs.drop(columns=["batch_size"], errors="ignore")
               .reset_index().to_dict(orient="records"),
               "spearman": spearman}
    settings = {"zoo_dir": str(zoo_dir), **{k: v for k, v in spec["base"].items()},
                "batch_sizes": spec["grid"]["train.batch_size"], "seeds": spec["seeds"],
                "engine": engine}
    return Result("batch-size", table, summary=summary, settings=settings)


def plot_batch_size_study(result: Result):
    """Four panels against batch size (log scale): % of FC eigenvalues outside the MP bulk,
    MP soft rank, alpha, and train/test accuracy with the gap."""
    from matplotlib.figure import Figure

    t = result.table
    fig = Figure(figsize=(13, 3.4))
    panels = [("outside_bulk", "% eigenvalues outside MP bulk", 100.0),
              ("mp_softrank", "MP soft rank λ+/λmax", 1.0), ("alpha", "alpha", 1.0)]
    for i, (key, label, scale) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        for short, marker in zip(_FC, ("o", "s")):
            col = f"{short}_{key}"
            if col not in t:
                continue
            ax.scatter(t["batch_size"], t[col] * scale, marker=marker, alpha=.5, label=short)
            mean = t.groupby("batch_size")[col].mean() * scale
            ax.plot(mean.index, mean.values, "-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 4, 4)
    for col, style in (("train_acc", "o-"), ("test_acc", "s-"), ("gap", "^--")):
        mean = t.groupby("batch_size")[col].mean()
        ax.plot(mean.index, mean.values, style, label=col)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
