"""Figures of the Hessian probe (read a :class:`~deepscope.curvature.HessianResult` only).

- :func:`plot_density`: the SLQ spectral density of block ``"all"`` (log scale) with the
  Lanczos top eigenvalues marked;
- :func:`hessian_section`: the demo report's curvature section.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_density", "hessian_section"]


def plot_density(result, block: str = "all") -> Figure:
    """SLQ density (Gaussian-smoothed, ``density_sigma`` wide) and the top eigenvalues."""
    d = result.densities.get(block)
    if d is None:
        raise ValueError(f"no spectral density for block {block!r}: run hessian() with "
                         f"'density' in which")
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    floor = max(float(np.max(d.density)) * 1e-8, 1e-300)
    ax.semilogy(d.grid, np.maximum(d.density, floor), color="#1f77b4", lw=1.2,
                label="SLQ density")
    eig = result.eigenvalues(block)
    for i, v in enumerate(eig):
        ax.axvline(v, color="#d62728", lw=0.8, ls="--",
                   label="Lanczos top eigenvalues" if i == 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectral density ({block})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def hessian_section(ctx):
    """Demo section: top eigenvalues, Hutch++ trace and the SLQ density of the training loss
    Hessian of the demo model (``ctx``: :class:`deepscope.demo.DemoContext`)."""
    from deepscope.curvature import hessian
    from deepscope.report.html import Section
    res = hessian(ctx.model, ctx.dataset, k=5, probes=60, density_runs=2, lanczos_steps=48,
                  seed=ctx.seed, progress=ctx.progress)
    s = res.summary
    summary = {"top_eigenvalue": s["top_eigenvalue"], "trace": s["trace"],
               "trace_stderr": s["trace_stderr"], "num_hvps": s["num_hvps"],
               "num_samples": s["num_samples"]}
    text = ("Curvature of the training loss through Hessian-vector products only: top "
            "eigenvalues by Lanczos with full reorthogonalization, the trace by Hutch++ with "
            "its standard error, and the spectral density by stochastic Lanczos quadrature "
            "(Ghorbani et al. 2019). A few large outliers over a bulk near zero is the "
            "typical shape for a trained classifier.")
    return Section("Hessian spectrum", text=text, summary=summary,
                   tables=[("eigenvalues and trace", res.table)],
                   figures=[("SLQ spectral density with the top eigenvalues",
                             plot_density(res))])
