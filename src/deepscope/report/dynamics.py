"""Figures of the dynamics probes (read Results only; nothing is computed here).

- :func:`plot_ntk_spectrum`: the eigenvalues of an empirical NTK (:class:`NTKResult`), sorted;
- :func:`plot_monitor`: drift, λ_min and flipped patterns per epoch (``NTKMonitor.result()``);
- :func:`plot_loss_curves`, :func:`plot_gram_curves`, :func:`plot_width_scaling`: the
  over-parameterization experiment (:class:`OverparamResult`);
- :func:`ntk_section`: the demo report's NTK section.
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

__all__ = ["plot_ntk_spectrum", "plot_monitor", "plot_loss_curves", "plot_gram_curves",
           "plot_width_scaling", "ntk_section"]


def _colors(n: int):
    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]


def plot_ntk_spectrum(result) -> Figure:
    """Eigenvalues of the empirical NTK in decreasing order (log scale; non-positive ones
    are drawn at the axis floor in grey)."""
    ev = np.asarray(result.table["eigenvalue"], dtype=float)
    s = result.summary
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    idx = np.arange(1, len(ev) + 1)
    pos = ev > 0
    ax.plot(idx[pos], ev[pos], ".-", ms=4, color="#1f77b4", label="eigenvalues")
    if (~pos).any() and pos.any():
        ax.plot(idx[~pos], np.full((~pos).sum(), ev[pos].min()), "x", color="#888",
                label=f"{int((~pos).sum())} <= 0")
    ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue of Θ")
    cond = s.get("condition_number")
    cond_txt = f"{cond:.3g}" if isinstance(cond, (int, float)) and math.isfinite(cond) else "∞"
    ax.set_title(f"empirical NTK (n={s.get('n')}, outputs={s.get('outputs')}): "
                 f"κ = {cond_txt}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_monitor(result) -> Figure:
    """Three panels per epoch: NTK drift, λ_min(Θ_t)/λ_min(Θ_0), flipped ReLU patterns."""
    t = result.table
    fig = Figure(figsize=(11, 3.2))
    panels = [("drift", "‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F"),
              ("ratio", "λ_min(Θ_t) / λ_min(Θ_0)"),
              ("flipped", "flipped activation patterns")]
    for i, (col, label) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 3, i)
        y = t["lambda_min"] / t["lambda_min_init"] if col == "ratio" else t[col]
        ax.plot(t["epoch"], y, "o-", ms=3)
        if col == "ratio":
            ax.axhline(0.5, color="r", ls="--", lw=1, label="1/2")
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss_curves(result) -> Figure:
    """Training loss vs step per width (seed 0 of each width; log scale) with the line of
    the fitted rate and of (1 − ηλ0)²."""
    losses, table, s = result.losses, result.table, result.summary
    widths = sorted(losses["width"].unique())
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for w, c in zip(widths, _colors(len(widths))):
        sel = losses[losses["width"] == w]
        seed = sel["seed"].min()
        sel = sel[sel["seed"] == seed]
        ax.plot(sel["step"], sel["loss"], color=c, lw=1.2, label=f"m={w}")
    if len(losses):
        l0 = float(losses.groupby(["width", "seed"])["loss"].first().median())
        k = np.arange(int(losses["step"].max()) + 1)
        ax.plot(k, l0 * s["rate_theory"] ** k, "k--", lw=1,
                label=r"$(1-\eta\lambda_0)^{2k}$")
        ax.plot(k, l0 * s["rate_bound"] ** k, "k:", lw=1,
                label=r"$(1-\eta\lambda_0/2)^k$ (Du et al. bound)")
    ax.set_yscale("log")
    ax.set_xlabel("gradient-descent step k")
    ax.set_ylabel("½ Σ (u_i − y_i)²")
    rate = table.groupby("width")["rate"].mean()
    ax.set_title("linear convergence; fitted rate " + ", ".join(
        f"{r:.3f}" for r in rate.to_numpy()[:6]), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_gram_curves(result) -> Figure:
    """Per width (mean over seeds): λ_min(H(t))/λ0 with the λ0/2 line, and the drift."""
    cur = result.curves
    widths = sorted(cur["width"].unique())
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for w, c in zip(widths, _colors(len(widths))):
        g = cur[cur["width"] == w].groupby("step").mean(numeric_only=True)
        ax1.plot(g.index, g["lambda_min_ratio"], color=c, label=f"m={w}")
        ax2.plot(g.index[1:], g["drift"].iloc[1:], color=c, label=f"m={w}")
    ax1.axhline(0.5, color="r", ls="--", lw=1, label="λ0/2")
    ax1.set_xlabel("step")
    ax1.set_ylabel("λ_min(H(t)) / λ0")
    ax1.legend(fontsize=7)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("‖H(t) − H(0)‖_F / ‖H(0)‖_F")
    fig.tight_layout()
    return fig


def plot_width_scaling(result) -> Figure:
    """Log-log vs width: final drift, max neuron displacement, flipped fraction and
    ‖H(0) − H∞‖_F/‖H∞‖_F, with their fitted slopes and an m^{-1/2} guide."""
    t, s = result.table, result.summary
    means = t.groupby("width").mean(numeric_only=True)
    ms = means.index.to_numpy(dtype=float)
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for col, key, label in (("drift", "slope_drift", "Gram drift"),
                            ("max_displacement", "slope_max_displacement",
                             "max ‖w_r(t) − w_r(0)‖"),
                            ("flipped", "slope_flipped", "flipped patterns"),
                            ("init_error", "slope_init_error", "‖H(0) − H∞‖/‖H∞‖")):
        ax.plot(ms, means[col], "o-", ms=4, label=f"{label} (slope {s.get(key, math.nan):.2f})")
        ax.scatter(t["width"], t[col], s=6, alpha=.35)
    if len(ms):
        ax.plot(ms, means["drift"].iloc[0] * (ms / ms[0]) ** -0.5, "k--", lw=1,
                label=r"$\propto m^{-1/2}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ntk_section(ctx):
    """Demo section: the empirical NTK of the demo model on 64 training points."""
    from deepscope.dynamics.ntk import ntk
    from deepscope.report.html import Section
    r = ntk(ctx.model, ctx.dataset, outputs="sum", max_samples=64, seed=ctx.seed,
            progress=ctx.progress)
    s = r.summary
    summary = {k: s[k] for k in ("n", "num_outputs", "num_params", "lambda_min",
                                 "lambda_max", "condition_number", "trace", "method",
                                 "time_s")}
    text = ("The empirical neural tangent kernel Θ = J Jᵀ (Jacot et al. 2018) of the trained "
            "model on 64 training points, J the Jacobian of the outputs with respect to all "
            "parameters, summed over the outputs (n x n). Gradient descent on a squared loss "
            "moves the outputs by −ηΘ(u − y): its condition number sets how unevenly the "
            "directions of the training data are fitted (Du et al. 2019).")
    top = r.table.head(10)
    return Section("Neural tangent kernel", text=text, summary=summary,
                   tables=[("largest eigenvalues", top)],
                   figures=[("eigenvalues of the empirical NTK", plot_ntk_spectrum(r))])
