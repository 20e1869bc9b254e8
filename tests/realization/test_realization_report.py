"""Figures of the realization probe and of the experiment (they read Results only)."""
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from deepscope.realization.probe import realization
from deepscope.realization.shallow import ShallowReLU
from deepscope.report.html import figure_png
from deepscope.report.realization import plot_inverse_stability, plot_realization
from deepscope.result import Result


def net(d, seed):
    g = torch.Generator().manual_seed(seed)
    return ShallowReLU.from_arrays(torch.randn(5, d, generator=g), torch.randn(5, generator=g),
                                   torch.randn(2, 5, generator=g))


def test_plot_realization_in_1d_2d_and_more():
    for d in (1, 2, 5):
        res = realization(net(d, 0), net(d, 1), (-1, 1), samples=64)
        fig = plot_realization(res)
        assert isinstance(fig, Figure) and len(fig.axes) >= 2
        assert figure_png(fig)[:4] == b"\x89PNG"


def test_plot_inverse_stability_from_a_stored_result():
    rows = [{"group": "trained", "kind": "perturb", "sup": r, "param_distance": 2 * r ** 0.5,
             "param_distance_raw": 3 * r ** 0.5} for r in (1e-3, 1e-2, 1e-1)]
    rows.append({"group": "injected", "kind": "dead", "sup": 0.0, "param_distance": 10.0,
                 "param_distance_raw": 12.0})
    fit = {"C": 2.0, "beta": 0.5, "num_points": 3, "slope_ls": 0.5}
    res = Result("inverse-stability", pd.DataFrame(rows),
                 summary={"fit": fit, "fit_raw": {**fit, "C": 3.0}, "fit_on": "sup"})
    res = Result.from_json(res.to_json())  # reads a round-tripped result
    fig = plot_inverse_stability(res)
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    x, y = line.get_data()
    np.testing.assert_allclose(y, 2.0 * np.asarray(x) ** 0.5)
    assert figure_png(fig)[:4] == b"\x89PNG"
