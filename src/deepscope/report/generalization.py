"""Figures of deepscope.generalization results (they read Results only, never compute).

- :func:`plot_margins`: the normalized margin distribution at each layer of a
  :class:`~deepscope.generalization.margins.MarginResult` (histogram of the per-sample margins
  with the quartiles and fences of the signature).
- :func:`plot_predicted_vs_true`: out-of-fold predicted gap against the true gap (a
  ``predict-gap`` / ``margin-gap`` result).
- :func:`plot_tau`: Kendall τ, granulated Ψ and the CMI score per measure.
- :func:`margins_section`: the demo report's section (``DemoContext -> Section``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["plot_margins", "plot_predicted_vs_true", "plot_tau", "margins_section"]


def plot_margins(result, *, bins: int = 40):
    """One panel per layer: histogram of the normalized margins d̂_l, Q1/median/Q3 (solid)
    and the fences Q1 - 1.5 IQR, Q3 + 1.5 IQR (dashed). Without per-sample margins (a result
    read back from JSON) only the signature lines are drawn."""
    from matplotlib.figure import Figure

    t = result.table.sort_values("position")
    n = len(t)
    fig = Figure(figsize=(3.2 * max(n, 1), 2.8))
    per_sample = getattr(result, "margins", {}) or {}
    keys = list(per_sample)
    for k, (_, row) in enumerate(t.iterrows()):
        ax = fig.add_subplot(1, max(n, 1), k + 1)
        if k < len(keys) and len(per_sample[keys[k]]):
            ax.hist(per_sample[keys[k]], bins=bins, color="#4a7fb0", alpha=.75)
        for stat, style in (("q1", "-"), ("median", "-"), ("q3", "-"),
                            ("lower_fence", "--"), ("upper_fence", "--")):
            v = row[stat]
            if v is not None and np.isfinite(v):
                ax.axvline(v, color="#c0392b" if stat == "median" else "#333", ls=style, lw=1)
        ax.set_title(f"l{int(row['position'])}: {row['layer']}", fontsize=9)
        ax.set_xlabel("normalized margin d/ν")
        if k == 0:
            ax.set_ylabel("points")
        ax.grid(alpha=.3)
    fig.tight_layout()
    return fig


def plot_predicted_vs_true(result, *, color_by: str | None = None):
    """Out-of-fold predicted gap (margin-signature regression) against the true gap.

    ``color_by`` names a column of ``result.models`` (e.g. ``"data.label_noise"``)."""
    from matplotlib.figure import Figure

    from deepscope.generalization.predict import REGRESSION_NAME
    m = result.models
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    y = m["gap"].to_numpy(dtype=float)
    p = m[REGRESSION_NAME].to_numpy(dtype=float)
    if color_by is not None and color_by in m.columns:
        vals = m[color_by].map(repr)
        for v in sorted(vals.unique()):
            sel = (vals == v).to_numpy()
            ax.scatter(y[sel], p[sel], s=18, alpha=.8, label=f"{color_by}={v}")
        ax.legend(fontsize=6)
    else:
        ax.scatter(y, p, s=18, alpha=.8)
    ok = np.isfinite(y) & np.isfinite(p)
    if ok.any():
        lo, hi = float(min(y[ok].min(), p[ok].min())), float(max(y[ok].max(), p[ok].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    s = result.summary
    ax.set_title(f"k-fold R² = {s.get('r2_cv', float('nan')):.3f}, "
                 f"τ = {s.get('tau_cv', float('nan')):.3f}", fontsize=9)
    ax.set_xlabel("true gap (train acc - test acc)")
    ax.set_ylabel("predicted gap (out of fold)")
    ax.grid(alpha=.3)
    fig.tight_layout()
    return fig


def plot_tau(result):
    """Bars of Kendall τ, granulated Ψ and the CMI score for every scored measure."""
    from matplotlib.figure import Figure

    t = result.table.sort_values("tau", key=lambda s: s.abs(), ascending=True)
    n = len(t)
    fig = Figure(figsize=(7.5, 0.35 * n + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(n)
    h = 0.27
    for i, (col, color) in enumerate((("tau", "#4a7fb0"), ("psi", "#e67e22"),
                                      ("cmi", "#27ae60"))):
        if col in t.columns:
            ax.barh(pos + (i - 1) * h, t[col].to_numpy(dtype=float), height=h, color=color,
                    label={"tau": "Kendall τ", "psi": "granulated Ψ", "cmi": "CMI"}[col])
    ax.set_yticks(pos)
    ax.set_yticklabels(t["measure"], fontsize=7)
    ax.axvline(0, color="k", lw=.8)
    ax.set_xlabel("score vs generalization gap")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=.3, axis="x")
    fig.tight_layout()
    return fig


def margins_section(ctx):
    """Demo section: margin distributions of the demo model on its training set."""
    from deepscope.generalization.margins import margins
    from deepscope.report.html import Section

    r = margins(ctx.model, ctx.dataset, progress=ctx.progress)
    s = r.summary
    summary = {"points": s["n_points"], "correctly classified (used)": s["n_used"],
               "layers": ", ".join(s["layers"])}
    summary.update({f"median margin l{k}": float(v)
                    for k, v in enumerate(r.table.sort_values("position")["median"])})
    text = ("Margin distributions (Jiang, Krishnan, Mobahi & Bengio, ICLR 2019): for every "
            "correctly classified training point, the first-order distance "
            "(f_i - f_j)/sqrt(||∇_h (f_i - f_j)||² + 1e-6) to the nearest decision boundary, "
            "measured at the input and three hidden layers and divided by the layer's total "
            "variation sqrt(tr Cov h) over the training set. The quartiles and fences of "
            "these distributions (20 numbers) are the signature that predicts the "
            "generalization gap across models (`deepscope predict-gap`).")
    return Section("Margin distributions", text=text, summary=summary,
                   tables=[("per-layer margin statistics", r.table)],
                   figures=[("normalized margins per layer", plot_margins(r))])
