"""Figures and the demo section of the representations probes."""
import time

import numpy as np
import torch
from torch import nn

from deepscope.report.representations import (plot_cka, plot_gdv_by_layer,
                                               representations_section, save_cka, save_gdv)
from deepscope.representations.cka import cka
from deepscope.representations.gdv import gdv


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(60, 4)), dtype=torch.float32)
    return model, (x, torch.arange(60) % 3)


def test_figures_and_save(tmp_path):
    model, data = _model_and_data()
    g = gdv(model, data, progress=False)
    fig = plot_gdv_by_layer(g)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["input", "0", "1", "2"]
    assert len(plot_gdv_by_layer({"a": g, "b": g}).axes[0].get_lines()) >= 2
    c = cka(model, data, include_input=True, progress=False)
    fig = plot_cka(c)
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (4, 4) and np.allclose(np.diag(img), 1.0)
    paths = {**save_gdv(g, tmp_path / "g"), **{f"c_{k}": v for k, v in
                                               save_cka(c, tmp_path / "c").items()}}
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_demo_section_is_fast():
    from deepscope.demo import DEMO_ARCH, DemoContext
    from deepscope.result import Result
    from deepscope.workflows import train_and_save
    run = train_and_save(DEMO_ARCH, {"name": "digits"},
                         {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 1,
                          "batch_size": 32, "seed": 0}, None, progress=False)
    ctx = DemoContext(out=None, checkpoint=None, model=run.model, dataset=run.dataset,
                      train_result=Result("train", run.history), progress=False, seed=0)
    t0 = time.process_time()
    sec = representations_section(ctx)
    cpu = time.process_time() - t0
    assert cpu < 15.0
    assert sec.title.startswith("Representations")
    assert [name for name, _ in sec.tables] == ["GDV per layer", "linear CKA between layers"]
    gtab = sec.tables[0][1]
    assert gtab["layer"].tolist() == ["input", "act1", "act2", "out"]
    assert (gtab["n"] == 1000).all()
    assert sec.summary["GDV output"] < sec.summary["GDV input"]
    assert len(sec.figures) == 2
