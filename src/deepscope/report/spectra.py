"""Figures of a spectra result (reads a :class:`~deepscope.weights.result.SpectraResult`).

- :func:`plot_esd`: one layer's ESD on log-log axes (log-binned density), the fitted power law
  from x_min, the Marchenko-Pastur density over the bulk, the bulk edge and the spikes;
- :func:`plot_overview`: a grid of those for many layers;
- :func:`plot_alpha_by_layer`: alpha per layer, colored by phase, with CIs when present.
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_esd", "plot_overview", "plot_alpha_by_layer", "PHASE_COLORS"]

PHASE_COLORS = {"random-like": "#8c8c8c", "bleeding-out": "#9ecae1",
                "bulk+spikes": "#3182bd", "bulk-decay": "#fd8d3c",
                "heavy-tailed": "#d62728", "rank-collapse": "#6a3d9a",
                "undetermined": "#000000"}


def _row(result, layer: str):
    t = result.table
    hit = t[t["layer"] == layer]
    if hit.empty:
        raise KeyError(f"no layer {layer!r} in the result")
    return hit.iloc[0]


def _draw_esd(ax, result, layer: str, *, legend: bool = True, title: bool = True) -> None:
    from deepscope.weights.mp import mp_density

    row = _row(result, layer)
    ev = np.asarray(result.evals.get(layer, []), dtype=float)
    ev = ev[np.isfinite(ev) & (ev > 0)]
    if ev.size < 2:
        ax.text(0.5, 0.5, "no spectrum", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = np.log10(ev.min()), np.log10(ev.max())
    bins = np.logspace(lo, hi + 1e-9, max(10, min(80, ev.size // 5)))
    dens, edges = np.histogram(ev, bins=bins, density=True)
    centers = np.sqrt(edges[:-1] * edges[1:])
    keep = dens > 0
    ax.plot(centers[keep], dens[keep], "o", ms=3, color="#1f77b4", label="ESD")
    alpha, xmin = row.get("alpha"), row.get("xmin")
    if row.get("fit_status") == "ok" and np.isfinite(alpha) and np.isfinite(xmin):
        frac = np.mean(ev >= xmin)
        x = np.logspace(np.log10(xmin), hi, 50)
        # tail density: frac * (alpha-1)/xmin * (x/xmin)^-alpha
        ax.plot(x, frac * (alpha - 1) / xmin * (x / xmin) ** (-alpha), "r-", lw=1.5,
                label=f"power law α={alpha:.2f}")
        ax.axvline(xmin, color="r", ls=":", lw=1, label="x_min")
    sigma, N, M = row.get("mp_sigma"), row.get("N"), row.get("M")
    if np.isfinite(sigma) and sigma > 0 and M and N:
        Q = float(N) / float(M)
        x = np.logspace(lo, np.log10(max(row.get("mp_bulk_max"), ev.min()) * 1.05), 200)
        d = mp_density(x / N, Q, sigma) / N
        ok = d > 0
        if ok.any():
            ax.plot(x[ok], d[ok], "g-", lw=1.2, label=f"MP σ={sigma:.3g}")
        ax.axvline(row.get("mp_bulk_max"), color="g", ls="--", lw=1, label="bulk edge λ+")
    nsp = row.get("num_spikes")
    if np.isfinite(nsp) and nsp > 0:
        spikes = ev[-int(nsp):]
        ymin = dens[keep].min() if keep.any() else 1e-6
        ax.plot(spikes, np.full(spikes.shape, ymin), "|", color="m", ms=12,
                label=f"{int(nsp)} spikes")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if title:
        ax.set_title(f"{layer} [{row.get('phase')}]", fontsize=9)
    ax.set_xlabel("λ")
    if legend:
        ax.legend(fontsize=7, loc="lower left")


def plot_esd(result, layer: str) -> Figure:
    """One layer's ESD with the power-law fit, the MP bulk, its edge and the spikes."""
    fig = Figure(figsize=(5.5, 4))
    _draw_esd(fig.add_subplot(1, 1, 1), result, layer)
    fig.tight_layout()
    return fig


def plot_overview(result, max_layers: int = 24) -> Figure:
    """A grid of per-layer ESDs (first ``max_layers`` analyzed layers)."""
    layers = [l for l in result.table["layer"] if l in result.evals][:max_layers]
    n = max(1, len(layers))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 2.7 * rows))
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_esd(ax, result, layer, legend=False)
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


def plot_alpha_by_layer(result) -> Figure:
    """Alpha per layer in model order, colored by phase; failed fits are not drawn."""
    t = result.table.reset_index(drop=True)
    fig = Figure(figsize=(max(5, 0.35 * len(t) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for phase, color in PHASE_COLORS.items():
        sel = t[(t["phase"] == phase) & (t["fit_status"] == "ok")]
        if sel.empty:
            continue
        y = sel["alpha"].astype(float)
        if "alpha_ci_low" in sel and sel["alpha_ci_low"].notna().any():
            lo = (y - sel["alpha_ci_low"].astype(float)).clip(lower=0)
            hi = (sel["alpha_ci_high"].astype(float) - y).clip(lower=0)
            ax.errorbar(sel.index, y, yerr=[lo.fillna(0), hi.fillna(0)], fmt="none",
                        ecolor=color, alpha=.6)
        ax.scatter(sel.index, y, color=color, label=phase, zorder=3)
    for y0 in (2, 4, 6):
        ax.axhline(y0, color="#bbb", lw=.8, ls="--")
    ax.set_xticks(range(len(t)))
    ax.set_xticklabels(t["layer"], rotation=75, fontsize=7, ha="right")
    ax.set_ylabel("alpha")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_spectra(result, out_dir) -> dict:
    """Write the table (CSV), summary and settings (JSON) and the figures (PNG) to a folder:
    ``spectra.csv``, ``spectra.json``, ``figures/esd_<layer>.png``, ``figures/overview.png``,
    ``figures/alpha_by_layer.png``. Returns ``{name: path}``."""
    import json
    import re
    from pathlib import Path

    from deepscope.report.html import figure_png

    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    written = {"table": out / "spectra.csv", "json": out / "spectra.json"}
    result.to_csv(written["table"])
    written["json"].write_text(json.dumps(result.to_dict(), indent=2))
    for layer in result.evals:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer)
        p = figs / f"esd_{safe}.png"
        p.write_bytes(figure_png(plot_esd(result, layer)))
        written[f"esd:{layer}"] = p
    for name, fn in (("overview", plot_overview), ("alpha_by_layer", plot_alpha_by_layer)):
        p = figs / f"{name}.png"
        p.write_bytes(figure_png(fn(result)))
        written[name] = p
    return written
