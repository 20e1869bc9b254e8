"""The demo report's section for :func:`deepscope.generalization.measures.measures`.

Reads a :class:`MeasuresResult` only (tables and summary; no figure, no computation beyond
calling the probe once for the demo's checkpoint).
"""
from __future__ import annotations

from deepscope.report.html import Section

__all__ = ["measures_section", "section_from_result"]

_HEADLINE = ("output_margin", "log_prod_of_spec", "log_prod_of_fro", "fro_dist", "path_norm",
             "pacbayes_sigma", "pacbayes_mag_sigma", "sharpness_alpha", "params")


def section_from_result(res) -> Section:
    """Section text, headline summary and tables of a measures result."""
    s = res.summary
    summary = {k: s[k] for k in _HEADLINE if k in s}
    omitted = res.settings.get("omitted", {})
    text = ("Generalization measures of Jiang et al., \"Fantastic generalization measures and "
            "where to find them\" (ICLR 2020): output margin γ (10th percentile), norms of the "
            "BatchNorm-folded layer matrices (conv kernels reshaped) and their distance from "
            "initialization, path norm, PAC-Bayes flatness (largest Gaussian σ that costs at "
            "most 0.1 train accuracy, 15 bisection steps x 10 draws; magnitude-aware variant "
            "with noise variance σ'²w² + 1e-6) and sharpness (largest box |u_i| ≤ α whose "
            "worst case found by 10 steps of projected gradient ascent costs at most 0.1 "
            "train accuracy). In the paper's large study, flatness measures were the most "
            "robust predictors of the generalization gap and spectral-norm products the "
            "least.")
    if omitted:
        text += " Omitted: " + "; ".join(f"{k} ({v})" for k, v in omitted.items()) + "."
    tables = [("measures", res.table)]
    if len(res.layers):
        tables.append(("per-layer norms (folded)", res.layers))
    return Section("Generalization measures", text=text, summary=summary, tables=tables)


def measures_section(ctx) -> Section:
    """Demo section (``ctx``: :class:`deepscope.demo.DemoContext`)."""
    from deepscope.generalization.measures import measures
    from deepscope.train.checkpoint import load_checkpoint
    init = load_checkpoint(ctx.checkpoint).init_params
    res = measures(ctx.model, ctx.dataset, init_params=init, seed=ctx.seed,
                   progress=ctx.progress)
    return section_from_result(res)
