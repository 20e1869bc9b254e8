"""deepscope.report.dynamics: figures render from results; the demo section on the demo MLP."""
import time
from pathlib import Path

import pytest
import torch

from deepscope.report.html import Section, figure_png


@pytest.fixture(scope="module")
def demo_ctx(tmp_path_factory):
    from deepscope.demo import DEMO_ARCH, DemoContext
    from deepscope.result import Result
    from deepscope.workflows import train_and_save
    out = tmp_path_factory.mktemp("demo")
    run = train_and_save(DEMO_ARCH, {"name": "digits", "seed": 0},
                         {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64,
                          "epochs": 1, "seed": 0}, out / "model.safetensors", progress=False)
    tr = Result("train", run.history, summary=dict(run.metrics))
    return DemoContext(out=Path(out), checkpoint=out / "model.safetensors", model=run.model,
                       dataset=run.dataset, train_result=tr, progress=False, seed=0)


def test_ntk_section_on_the_demo_model(demo_ctx):
    from deepscope._params import state_fingerprint
    from deepscope.report.dynamics import ntk_section
    fp = state_fingerprint(demo_ctx.model)
    t0 = time.perf_counter()
    sec = ntk_section(demo_ctx)
    elapsed = time.perf_counter() - t0
    assert isinstance(sec, Section) and sec.title == "Neural tangent kernel"
    s = sec.summary
    assert s["n"] == 64 and s["num_outputs"] == 10
    assert s["num_params"] == sum(p.numel() for p in demo_ctx.model.parameters())
    assert 0 < s["lambda_min"] <= s["lambda_max"]
    assert s["condition_number"] == pytest.approx(s["lambda_max"] / s["lambda_min"])
    assert len(figure_png(sec.figures[0][1])) > 1000
    assert state_fingerprint(demo_ctx.model) == fp
    assert elapsed < 60  # ~2 s on an idle 2-core machine


def test_overparam_and_monitor_figures():
    from deepscope.dynamics.monitor import NTKMonitor
    from deepscope.experiments.overparam import overparam_experiment
    from deepscope.report.dynamics import (plot_gram_curves, plot_loss_curves, plot_monitor,
                                           plot_ntk_spectrum, plot_width_scaling)
    res = overparam_experiment(widths=(8, 64, 512), n=6, d=3, seeds=(0,), steps=20,
                               eval_points=4, progress=False)
    for plot in (plot_loss_curves, plot_gram_curves, plot_width_scaling):
        fig = plot(res)
        assert len(figure_png(fig)) > 1000
        assert fig.axes and fig.axes[0].lines
    from deepscope.dynamics.ntk import ntk
    r = ntk(torch.nn.Linear(3, 2), torch.randn(5, 3), outputs="all")  # rank 4 of 10: zeros
    assert len(figure_png(plot_ntk_spectrum(r))) > 1000
    mon = NTKMonitor(torch.randn(4, 3))
    mon._rows = [{"epoch": 0, "drift": 0.0, "lambda_min": 1.0, "lambda_max": 2.0,
                  "lambda_min_init": 1.0, "flipped": 0.0, "max_displacement": 0.0,
                  "max_abs_displacement": 0.0, "rel_displacement": 0.0},
                 {"epoch": 1, "drift": 0.1, "lambda_min": 0.8, "lambda_max": 2.0,
                  "lambda_min_init": 1.0, "flipped": 0.05, "max_displacement": 0.1,
                  "max_abs_displacement": 0.1, "rel_displacement": 0.1}]
    fig = plot_monitor(mon.result())
    assert len(fig.axes) == 3 and list(fig.axes[1].lines[0].get_ydata()) == [1.0, 0.8]
