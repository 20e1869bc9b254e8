"""Figures of the path probes (read Results only) and the demo's interpolation section.

- :func:`plot_interpolation`: loss and error against t along θ(t) = (1 - t) θ_a + t θ_b,
  train and test, with the straight reference line (1 - t) L(0) + t L(1) whose largest gap
  to the curve is the barrier (Frankle et al. 2020); optionally the curve after permutation
  alignment (Ainsworth et al. 2023) on the same axes.
- :func:`interpolation_section`: the demo report's section (a second model, raw and aligned
  interpolation, barriers).
"""
from __future__ import annotations

from deepscope.result import Result

__all__ = ["plot_interpolation", "interpolation_section"]

_COLORS = {"train": "tab:blue", "test": "tab:orange"}


def plot_interpolation(result: Result, aligned: Result | None = None):
    """Loss (and error, for classification) against t: solid curves, dashed linear
    reference; with ``aligned`` its curves dotted-marked in the same colors."""
    from matplotlib.figure import Figure

    t = result.table
    splits = list(result.settings.get("splits") or
                  [c[:-len("_loss")] for c in t.columns
                   if c.endswith("_loss") and not c.endswith("_linear")])
    metrics = ["loss"] + (["error"] if any(f"{s}_error" in t for s in splits) else [])
    fig = Figure(figsize=(4.6 * len(metrics), 3.5))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for k, s in enumerate(splits):
            col = f"{s}_{metric}"
            if col not in t:
                continue
            color = _COLORS.get(s, f"C{k + 2}")
            ax.plot(t["t"], t[col], color=color, marker=".",
                    label=s if aligned is None else f"{s} raw")
            ax.plot(t["t"], t[f"{col}_linear"], color=color, ls="--", lw=1,
                    label=f"{s} linear")
            if aligned is not None and col in aligned.table:
                at = aligned.table
                ax.plot(at["t"], at[col], color=color, ls=":", marker="x", ms=4,
                        label=f"{s} aligned")
        ax.set_xlabel("t   (θ = (1-t)·θ_a + t·θ_b)")
        ax.set_ylabel(metric)
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def interpolation_section(ctx):
    """Demo section: train a second model like the demo's (another seed, few epochs),
    interpolate to it raw and after weight matching, show the curves and the barriers."""
    from deepscope.landscape.align import align
    from deepscope.landscape.interpolate import interpolate
    from deepscope.report.html import Section
    from deepscope.workflows import train_and_save
    from deepscope.demo import DEMO_ARCH, DEMO_DATA

    settings = dict(ctx.train_result.settings)
    settings.update(seed=ctx.seed + 1, epochs=min(int(settings.get("epochs", 5)), 5))
    path = ctx.out / "model_b.safetensors"
    run = train_and_save(DEMO_ARCH, dict(DEMO_DATA, seed=ctx.seed), settings, path,
                         progress=False)
    raw = interpolate(ctx.model, run.model, ctx.dataset, steps=21, progress=ctx.progress,
                      seed=ctx.seed)
    al = align(ctx.model, run.model, seed=ctx.seed)
    aligned = interpolate(ctx.model, al.model, ctx.dataset, steps=21, progress=ctx.progress,
                          seed=ctx.seed)
    summary = {}
    for key in ("barrier_train_loss", "barrier_test_loss", "barrier_train_error",
                "barrier_test_error"):
        if key in raw.summary:
            summary[f"{key} (raw)"] = raw.summary[key]
            summary[f"{key} (aligned)"] = aligned.summary[key]
    summary.update({"alignment rounds": al.summary["rounds"],
                    "converged": al.summary["converged"],
                    "units moved": f"{al.summary['fraction_moved']:.1%}",
                    "distance raw": al.summary["distance_before"],
                    "distance aligned": al.summary["distance_after"]})
    text = (f"A second model of the same architecture ({path.name}: seed {ctx.seed + 1}, "
            f"{settings['epochs']} epochs) and the straight line θ(t) = (1-t)·θ_a + t·θ_b "
            f"between the two. The barrier is the largest rise of the loss (or error) above "
            f"the straight line between the end values (Frankle et al. 2020; Entezari et al. "
            f"2022). Git Re-Basin weight matching (Ainsworth et al. 2023) permutes the second "
            f"model's hidden units to match the first without changing its function; the "
            f"barrier after alignment is typically much lower.")
    cols = ["t", "train_loss", "test_loss", "train_error", "test_error"]
    table = raw.table[[c for c in cols if c in raw.table]].copy()
    for c in cols[1:]:
        if c in aligned.table:
            table[f"{c} (aligned)"] = aligned.table[c]
    return Section("Linear interpolation and alignment", text=text, summary=summary,
                   tables=[("loss along the path", table)],
                   figures=[("loss and error along the path, raw and aligned",
                             plot_interpolation(raw, aligned))])
