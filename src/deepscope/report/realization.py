"""Figures of the realization probe and the inverse-stability experiment (read Results only).

- :func:`plot_realization`: where two shallow nets differ on the domain (|f_a − f_b| and the
  gradient difference: a curve in 1-d, a colored scatter in 2-d, a histogram otherwise) and
  the magnitudes of matched neurons of the canonical nets;
- :func:`plot_inverse_stability`: log-log scatter of parameter distance (modulo symmetries,
  and raw) against realization distance, trained pairs with the fitted envelope
  d_param = C d_real^β, injected pathologies by kind.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_realization", "plot_inverse_stability", "KIND_STYLES"]

#: marker and color per pair kind of the experiment
KIND_STYLES = {"seed": ("o", "#1f77b4"), "perturb": ("o", "#6baed6"),
               "opposite": ("v", "#d62728"), "parallel": ("s", "#ff7f0e"),
               "vanishing_outer": ("D", "#9467bd"), "unbalanced": ("^", "#2ca02c"),
               "dead": ("X", "#000000")}
_FLOOR = 1e-16


def plot_realization(result) -> Figure:
    """Two panels from a :class:`~deepscope.realization.result.RealizationResult`."""
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    pts = np.asarray(result.samples.get("points", np.zeros((0, 1))))
    vd = np.asarray(result.samples.get("value_diff", np.zeros(0)))
    gd = np.asarray(result.samples.get("grad_diff", np.zeros(0)))
    s = result.summary
    if len(vd) and pts.shape[1] == 1:
        order = np.argsort(pts[:, 0])
        ax1.plot(pts[order, 0], vd[order], color="#1f77b4", label="|f_a − f_b|")
        ok = np.isfinite(gd[order])
        ax1.plot(pts[order, 0][ok], gd[order][ok], color="#ff7f0e", lw=0.8,
                 label="|∇f_a − ∇f_b|")
        ax1.set_xlabel("x")
        ax1.legend(fontsize=8)
    elif len(vd) and pts.shape[1] == 2:
        sc = ax1.scatter(pts[:, 0], pts[:, 1], c=vd, s=4, cmap="viridis")
        fig.colorbar(sc, ax=ax1, label="|f_a − f_b|")
        ax1.set_xlabel("x1")
        ax1.set_ylabel("x2")
    elif len(vd):
        ax1.hist(vd, bins=50, color="#1f77b4")
        ax1.set_xlabel("|f_a − f_b| at the sample points")
    ax1.set_title(f"sup {s.get('sup', float('nan')):.3g}, Sobolev "
                  f"{s.get('sobolev', float('nan')):.3g}", fontsize=10)
    t = result.table
    if len(t):
        sc = ax2.scatter(t["magnitude_a"], t["magnitude_b"], c=t["cosine"].fillna(0),
                         cmap="coolwarm_r", vmin=-1, vmax=1, s=18, edgecolor="k", lw=0.3)
        top = float(max(t["magnitude_a"].max(), t["magnitude_b"].max(), 1e-12))
        ax2.plot([0, top], [0, top], color="0.6", lw=0.8)
        fig.colorbar(sc, ax=ax2, label="cosine of (w, b) directions")
    ax2.set_xlabel("balanced magnitude, net a")
    ax2.set_ylabel("matched neuron, net b")
    ax2.set_title(f"param. distance mod sym {s.get('param_distance', float('nan')):.3g} "
                  f"(raw {s.get('param_distance_raw', float('nan')):.3g})", fontsize=10)
    fig.tight_layout()
    return fig


def _envelope(ax, fit: dict, xs: np.ndarray, label: str) -> None:
    if not fit or len(xs) == 0:
        return
    lo, hi = float(xs.min()), float(xs.max())
    grid = np.logspace(np.log10(max(lo, _FLOOR)), np.log10(max(hi, _FLOOR * 10)), 50)
    ax.plot(grid, fit["C"] * grid ** fit["beta"], "k--", lw=1,
            label=f"{label}: C={fit['C']:.3g}, β={fit['beta']:.2f}")


def plot_inverse_stability(result) -> Figure:
    """Log-log scatter of the experiment (modulo symmetries | raw) with the fitted bound."""
    t = result.table
    s = result.summary
    key = s.get("fit_on", "sup")
    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2)
    for ax, col, fit, title in (
            (axes[0], "param_distance", s.get("fit"), "modulo symmetries"),
            (axes[1], "param_distance_raw", s.get("fit_raw"), "raw parameters")):
        for kind, g in t.groupby("kind", sort=False):
            marker, color = KIND_STYLES.get(kind, ("o", "0.5"))
            trained = (g["group"] == "trained").all()
            ax.scatter(np.maximum(g[key].astype(float), _FLOOR),
                       np.maximum(g[col].astype(float), _FLOOR), marker=marker, color=color,
                       s=22 if trained else 36, alpha=0.8 if trained else 0.95,
                       label=f"{kind} ({'trained' if trained else 'injected'})")
        tr = t[t["group"] == "trained"]
        xs = np.concatenate([tr[key].to_numpy(float), t[key].to_numpy(float)])
        _envelope(ax, fit, np.maximum(xs[xs > 0], _FLOOR), "bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"realization distance ({key}; floored at {_FLOOR:g})")
        ax.set_ylabel(f"parameter distance ({title})")
        ax.set_title(f"d_param <= C d_real^β fitted on trained pairs ({title})", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
