"""Figures of representation results (read Results only; nothing is computed here).

- :func:`plot_gdv_by_layer`: GDV per layer, one line per result (one :class:`GDVResult` or a
  ``{label: GDVResult}`` dict) or per net of a gdv-depth experiment result;
- :func:`plot_cka`: the layer-by-layer CKA heatmap of a :class:`CKAResult` (NaN cells hatched);
- :func:`plot_gdv_depth`: the gdv-depth experiment: GDV per layer for every net, and the
  output-layer and best-layer GDV against depth;
- :func:`representations_section`: the demo report's section (GDV per layer of the demo MLP
  and its CKA heatmap).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_gdv_by_layer", "plot_cka", "plot_gdv_depth", "representations_section",
           "save_gdv", "save_cka"]


def _curve(ax, table, label: str | None, marker: str = "o") -> None:
    t = table.sort_values("index")
    ax.plot(t["index"], t["gdv"], marker=marker, ms=4, label=label)
    best = t.loc[t["gdv"].idxmin()]
    ax.scatter([best["index"]], [best["gdv"]], s=70, facecolors="none", edgecolors="k",
               zorder=4)


def plot_gdv_by_layer(results) -> Figure:
    """GDV against layer index; the minimum of each curve is circled."""
    if not isinstance(results, Mapping):
        results = {None: results}
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    ticks = None
    for label, res in results.items():
        _curve(ax, res.table, label)
        ticks = res.table.sort_values("index")
    if len(results) == 1 and ticks is not None:
        ax.set_xticks(ticks["index"])
        ax.set_xticklabels(ticks["layer"], rotation=45, ha="right", fontsize=8)
    else:
        ax.set_xlabel("layer index (0 = input)")
        ax.legend(fontsize=7)
    ax.axhline(0, color="#bbb", lw=.8, ls="--")
    ax.set_ylabel("GDV (lower = better separated)")
    ax.grid(alpha=.3)
    fig.tight_layout()
    return fig


def plot_cka(result, *, title: str | None = None) -> Figure:
    """Heatmap of the CKA matrix (rows: layers of model A, columns: of model B)."""
    m = result.matrix
    vals = m.to_numpy(dtype=float)
    nr, nc = vals.shape
    fig = Figure(figsize=(max(4.0, 0.45 * nc + 2.5), max(3.5, 0.4 * nr + 1.8)))
    ax = fig.add_subplot(1, 1, 1)
    finite = vals[np.isfinite(vals)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0  # unbiased CKA can be < 0
    im = ax.imshow(np.ma.masked_invalid(vals), vmin=low, vmax=1.0, cmap="magma",
                   origin="upper", aspect="auto")
    for (i, j) in zip(*np.nonzero(~np.isfinite(vals))):
        ax.add_patch(_hatch(i, j))
    if nr * nc <= 144:
        for i in range(nr):
            for j in range(nc):
                v = vals[i, j]
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="w" if v < 0.6 else "k")
    ax.set_xticks(range(nc))
    ax.set_xticklabels(m.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(nr))
    ax.set_yticklabels(m.index, fontsize=8)
    between = result.summary.get("between_models")
    ax.set_xlabel("model B layer" if between else "layer")
    ax.set_ylabel("model A layer" if between else "layer")
    est = result.summary.get("estimator", "biased")
    ax.set_title(title or f"linear CKA ({est}, n={result.summary.get('n')})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=.046, pad=.04)
    fig.tight_layout()
    return fig


def _hatch(i: int, j: int):
    from matplotlib.patches import Rectangle
    return Rectangle((j - .5, i - .5), 1, 1, fill=False, hatch="xx", color="#888", lw=0)


def plot_gdv_depth(result) -> Figure:
    """Two panels: GDV per layer of every net; output-layer and best-layer GDV vs depth."""
    t = result.table
    fig = Figure(figsize=(12, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    for net, g in t.groupby("net", sort=False):
        _curve(ax, g, str(net))
    ax.axhline(0, color="#bbb", lw=.8, ls="--")
    ax.set_xlabel("layer index (0 = input)")
    ax.set_ylabel("GDV")
    ax.set_title("GDV per layer", fontsize=9)
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    nets = result.summary.get("nets", [])
    for k, arch in enumerate(sorted({n["arch"] for n in nets}, reverse=True)):
        sel = sorted((n for n in nets if n["arch"] == arch), key=lambda n: n["depth"])
        d = [n["depth"] for n in sel]
        color = f"C{k}"
        ax.plot(d, [n["output_gdv"] for n in sel], "o-", color=color,
                label=f"{arch}: output layer")
        ax.plot(d, [n["best_gdv"] for n in sel], "s--", color=color, mfc="none", ms=9,
                label=f"{arch}: best layer")
    best = result.summary.get("best_depth")
    if best is not None:
        ax.axvline(best, color="r", ls=":", lw=1, label=f"best output GDV: depth {best}")
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("GDV (mean over seeds)")
    ax.set_title("GDV vs depth", fontsize=9)
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_gdv(result, out_dir) -> dict:
    """``gdv.csv``, ``gdv.json`` and ``gdv_by_layer.png`` in ``out_dir``; returns the paths."""
    from pathlib import Path

    from deepscope.report.html import figure_png
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "gdv.csv", "json": out / "gdv.json",
             "figure": out / "gdv_by_layer.png"}
    result.to_csv(paths["table"])
    result.to_json(paths["json"])
    paths["figure"].write_bytes(figure_png(plot_gdv_by_layer(result)))
    return paths


def save_cka(result, out_dir) -> dict:
    """``cka.csv`` (long table), ``cka_matrix.csv``, ``cka.json``, ``cka.png`` in ``out_dir``."""
    from pathlib import Path

    from deepscope.report.html import figure_png
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "cka.csv", "matrix": out / "cka_matrix.csv",
             "json": out / "cka.json", "figure": out / "cka.png"}
    result.to_csv(paths["table"])
    result.matrix.to_csv(paths["matrix"])
    result.to_json(paths["json"])
    paths["figure"].write_bytes(figure_png(plot_cka(result)))
    return paths


def representations_section(ctx):
    """Demo section: GDV per layer of the demo MLP (train split, 100 points per class) and
    the linear CKA between its layers (1000 training inputs)."""
    from deepscope.report.html import Section
    from deepscope.representations.cka import cka
    from deepscope.representations.gdv import gdv
    g = gdv(ctx.model, ctx.dataset, max_per_class=100, seed=ctx.seed, progress=False)
    c = cka(ctx.model, ctx.dataset, max_samples=1000, seed=ctx.seed, include_input=True,
            progress=False)
    s = g.summary
    text = ("Generalized Discrimination Value (Schilling et al.): per layer, the mean "
            "intra-class minus the mean inter-class distance of z-scored activations over "
            "sqrt(dimension); more negative = classes better separated. Linear CKA "
            "(Kornblith et al. 2019): similarity of the layers' representations of the same "
            "inputs (1 = identical up to rotation and scale).")
    summary = {"GDV input": s["input_gdv"], "GDV output": s["output_gdv"],
               "best layer": s["best_layer"], "best GDV": s["best_gdv"],
               "GDV stops improving at": s["stops_improving_at"],
               "points per class": 100, "CKA samples": c.summary["n"],
               "CKA NaN cells": c.summary["num_nan"]}
    return Section("Representations: GDV and CKA", text=text, summary=summary,
                   tables=[("GDV per layer", g.table),
                           ("linear CKA between layers", c.matrix.reset_index())],
                   figures=[("GDV per layer", plot_gdv_by_layer(g)),
                            ("linear CKA between layers", plot_cka(c))])
