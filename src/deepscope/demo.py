"""``deepscope demo``: train a small network on digits, run every probe, write a report.

The demo is the project's main job on a fresh machine: a 64-256-128-10 MLP trained on
scikit-learn's digits (well under a minute on 2 CPU cores), saved as a checkpoint, then every
probe that exists is run on it and the results land in one self-contained HTML page.
Each probe contributes one section; a probe that fails is reported in its section instead of
stopping the demo.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepscope.report.html import Section, write_report
from deepscope.result import Result

__all__ = ["run_demo", "DemoContext", "DEMO_SECTIONS"]

DEMO_ARCH = {"arch": "mlp", "widths": [256, 128], "activation": "relu"}
DEMO_DATA = {"name": "digits"}


@dataclass
class DemoContext:
    out: Path
    checkpoint: Path
    model: object
    dataset: object
    train_result: Result
    progress: bool
    seed: int


def _training_section(ctx: DemoContext) -> Section:
    from deepscope.report.training import plot_training
    r = ctx.train_result
    s = r.summary
    text = (f"A {'-'.join(str(w) for w in [64, *DEMO_ARCH['widths'], 10])} ReLU MLP trained "
            f"on scikit-learn's 8x8 digits with SGD (momentum 0.9) for {s.get('epochs_run')} "
            f"epochs. Checkpoint: {ctx.checkpoint.name}.")
    summary = {k: s[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc",
                                 "epochs_run") if k in s}
    return Section("Training", text=text, summary=summary,
                   tables=[("history", r.table)],
                   figures=[("loss and accuracy per epoch", plot_training(r))])


def _spectra_section(ctx: DemoContext) -> Section:
    from deepscope.report.spectra import plot_alpha_by_layer, plot_esd, plot_overview
    from deepscope.weights import spectra
    r = spectra(ctx.model, bootstrap=200, randomize=True, seed=ctx.seed,
                progress=ctx.progress)
    cols = ["layer", "type", "N", "M", "lambda_max", "alpha", "alpha_ci_low", "alpha_ci_high",
            "ks_distance", "num_tail", "fit_status", "alpha_weighted", "log_norm",
            "stable_rank", "mp_sigma", "num_spikes", "mp_softrank", "num_traps", "phase"]
    s = r.summary
    summary = {k: s[k] for k in ("alpha", "alpha_weighted", "log_norm", "log_alpha_norm",
                                 "log_spectral_norm", "stable_rank", "num_fitted",
                                 "num_failed", "num_skipped")}
    summary["phases"] = ", ".join(f"{k}: {v}" for k, v in s["phase_counts"].items() if v)
    text = ("Heavy-tailed self-regularization (Martin & Mahoney): the eigenvalues of WᵀW per "
            "layer, a power-law fit of the tail (Clauset MLE, 90% bootstrap interval), the "
            "Marchenko-Pastur bulk and its spikes, and the phase of training. No data needed.")
    figures = [("ESD per layer with power-law fit and MP bulk", plot_overview(r)),
               ("alpha per layer, colored by phase", plot_alpha_by_layer(r))]
    analyzed = [l for l in r.table["layer"] if l in r.evals]
    if analyzed:
        figures.append((f"ESD of {analyzed[0]}", plot_esd(r, analyzed[0])))
    return Section("Weight spectra", text=text, summary=summary,
                   tables=[("per-layer spectra", r.table[cols])], figures=figures)


def _section_from(target: str) -> Callable[[DemoContext], Section]:
    """A section maker imported on first use: ``"deepscope.report.module:function"``."""
    module, _, name = target.partition(":")

    def make(ctx: DemoContext) -> Section:
        import importlib
        return getattr(importlib.import_module(module), name)(ctx)

    make.__name__ = name
    return make


DEMO_SECTIONS: list[Callable[[DemoContext], Section]] = [
    _training_section,
    _spectra_section,
    _section_from("deepscope.report.landscape_paths:interpolation_section"),
    _section_from("deepscope.report.landscape_connect:connection_section"),
    _section_from("deepscope.report.landscape_surface:surface_section"),
    _section_from("deepscope.report.curvature:hessian_section"),
    _section_from("deepscope.report.generalization:margins_section"),
    _section_from("deepscope.report.measures:measures_section"),
    _section_from("deepscope.report.representations:representations_section"),
    _section_from("deepscope.report.dynamics:ntk_section"),
]


def run_demo(out: str | Path = "deepscope-demo", *, epochs: int = 15, seed: int = 0,
             progress: bool = True) -> Path:
    """Run the demo; return the path of the written ``index.html``."""
    from deepscope.workflows import train_and_save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "model.safetensors"
    train = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32,
             "epochs": epochs, "seed": seed}
    run = train_and_save(DEMO_ARCH, dict(DEMO_DATA, seed=seed), train, ckpt,
                         progress=progress)
    tr = Result("train", run.history, summary=dict(run.metrics), settings=train)
    ctx = DemoContext(out=out, checkpoint=ckpt, model=run.model, dataset=run.dataset,
                      train_result=tr, progress=progress, seed=seed)
    sections = []
    for make in DEMO_SECTIONS:
        try:
            sections.append(make(ctx))
        except Exception as exc:  # one failing probe must not hide the others
            sections.append(Section(getattr(make, "__name__", "probe").strip("_"),
                                    text=f"this probe failed: {type(exc).__name__}: {exc}"))
    return write_report(out, sections, title="deepscope demo report")
