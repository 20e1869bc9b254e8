"""Figures of connection paths and of the level-set study, and the demo report's section.

Plots read Results only (:class:`~deepscope.landscape.result_connect.ConnectResult` tables /
summaries and the ``level_sets`` Result of :mod:`deepscope.experiments.level_sets`); they
return plain matplotlib Figures (no pyplot state).
"""
from __future__ import annotations

import numpy as np

from deepscope.result import Result

__all__ = ["plot_connection", "plot_level_sets", "connection_section"]

_METHOD_COLORS = {"dss": "#1f77b4", "linear": "#d62728", "bezier": "#2ca02c",
                  "polychain": "#9467bd"}


def plot_connection(*results: Result, title: str | None = None):
    """Level along each path against the normalized path position, beads marked, L0 line."""
    from matplotlib.figure import Figure
    if not results:
        raise ValueError("plot_connection needs at least one connect Result")
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    first = results[0]
    for r in results:
        t, s = r.table, r.summary
        method = s.get("method", r.settings.get("method", "path"))
        color = _METHOD_COLORS.get(method, None)
        length = s.get("normalized_length", np.nan)
        label = f"{method}: {s.get('connected')}, length {length:.3f}, {s.get('num_beads')} beads"
        ax.plot(t["position"], t["level"], "-", color=color, lw=1.5, label=label)
        if method in ("dss", "linear"):
            b = t[t["bead"].astype(bool)].drop_duplicates("position")
            ax.plot(b["position"], b["level"], "o", color=color, ms=6, mfc="white", mew=1.5)
    L0 = first.summary.get("threshold")
    if L0 is not None:
        ax.axhline(L0, color="k", ls="--", lw=1, label=f"L0 = {L0:g}")
        alpha = first.settings.get("alpha")
        if alpha is not None and first.summary.get("method") == "dss":
            ax.axhline(alpha * L0, color="gray", ls=":", lw=1, label=f"alpha·L0 = {alpha * L0:g}")
    top = max(float(np.nanmax(r.table["level"])) for r in results if len(r.table))
    if L0 is not None and top > 20 * L0:  # a high barrier would flatten the rest:
        ax.set_yscale("symlog", linthresh=L0)  # linear below L0, logarithmic above
        ax.set_ylim(bottom=0.0)  # losses and errors are >= 0
    level = first.summary.get("level", "level")
    ax.set_xlabel("path position (distance travelled / ‖θ_b − θ_a‖)")
    ax.set_ylabel(level.replace("_", " "))
    ax.set_title(title or "loss along the path between two solutions")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_level_sets(result: Result):
    """Normalized geodesic length and bead count against L0 (log axis, L0 decreasing)."""
    from matplotlib.figure import Figure
    t = result.table
    fig = Figure(figsize=(9.0, 3.8))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, col, name in ((ax1, "normalized_length", "normalized geodesic length"),
                          (ax2, "num_beads", "beads (end points included)")):
        if len(t):
            for verdict, marker in (("yes", "o"), ("undetermined", "x"), ("no", "s")):
                sub = t[t["connected"] == verdict]
                if len(sub):
                    ax.plot(sub["threshold"], sub[col], marker, ls="none", alpha=0.7,
                            label=f"pair: {verdict}")
            yes = t[t["connected"] == "yes"]
            if len(yes):
                means = yes.groupby("threshold")[col].mean()
                ax.plot(means.index, means.values, "-", color="k", lw=1.2,
                        label="mean over 'yes' pairs")
            ax.set_xscale("log")
            ax.invert_xaxis()
        ax.set_xlabel("threshold L0 (decreasing →)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax1.axhline(1.0, color="gray", ls=":", lw=1)
    ax1.legend(fontsize=8)
    task = result.summary.get("task", "")
    fig.suptitle(f"level-set study ({task}): Freeman & Bruna's dynamic string sampling")
    fig.tight_layout()
    return fig


def connection_section(ctx):
    """Demo section: DSS between the demo model and a second one trained from another seed.

    The second MLP (same architecture and data, seed + 1) is trained for a few epochs with
    :func:`deepscope.workflows.train_and_save`; the threshold is 1.25 x the higher of the two
    training losses, so both end points are in the level set.
    """
    from deepscope.landscape.connect import connect
    from deepscope.landscape.evaluate import PointEvaluator
    from deepscope.report.html import Section
    from deepscope.workflows import train_and_save

    arch = getattr(ctx.model, "deepscope_spec", None) or {"arch": "mlp", "widths": [256, 128]}
    data = ctx.dataset.spec
    seed = int(ctx.seed) + 1
    other = train_and_save(arch, data, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                        "batch_size": 32, "epochs": 5, "seed": seed},
                           None, progress=False).model
    ev = PointEvaluator(ctx.model, ctx.dataset)
    la = ev.loss_at(ev.vector(ctx.model))
    lb = ev.loss_at(ev.vector(other))
    L0 = 1.25 * max(la, lb)
    common = dict(threshold=L0, progress=False, seed=ctx.seed)
    dss = connect(ctx.model, other, ctx.dataset, "dss", max_depth=4,
                  bead_train={"optimizer": "adam", "lr": 1e-3, "max_steps": 300,
                              "batch_size": 256, "check_every": 10}, **common)
    lin = connect(ctx.model, other, ctx.dataset, "linear", **common)
    s = dss.summary
    text = ("Dynamic String Sampling (Freeman & Bruna, ICLR 2017) between the demo model and "
            f"a second model trained from seed {seed}: is there a path between them along "
            f"which the training loss stays below L0 = 1.25 x the higher end-point loss? "
            "Beads are placed at the highest point of each failing straight segment and "
            "trained back below 0.95·L0; the normalized geodesic length is 1 for a straight "
            "path. The straight segment alone is shown for comparison.")
    summary = {"L0 (train loss)": L0, "connected (DSS)": s["connected"],
               "normalized length": s["normalized_length"], "beads": s["num_beads"],
               "depth": s["depth"], "max loss along DSS path": s["max_level"],
               "straight segment": lin.summary["connected"],
               "max loss along straight segment": lin.summary["max_level"]}
    if s["connected"] != "yes":
        summary["DSS stop reason"] = s["stop_reason"]
    return Section("Connecting two solutions (dynamic string sampling)", text=text,
                   summary=summary,
                   tables=[("DSS loss profile", dss.table)],
                   figures=[("training loss along the DSS path (beads marked) and the "
                             "straight segment", plot_connection(dss, lin))])
