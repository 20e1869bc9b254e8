"""The curvature figure and demo section read the HessianResult they are given."""
import numpy as np
import pytest
import torch

import deepscope
from deepscope._params import state_fingerprint
from deepscope.nets import build_model
from deepscope.report.curvature import hessian_section, plot_density


def test_density_plot_and_section(tmp_path):
    d = deepscope.load_dataset("digits", n_train=200, n_test=50)
    m = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10,
                     "widths": [16]}, seed=0)
    res = deepscope.hessian(m, d, k=3, probes=12, density_runs=1, lanczos_steps=20,
                            progress=False)
    fig = plot_density(res)
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), res.density_grid)
    marks = [ln.get_xdata()[0] for ln in fig.axes[0].get_lines()[1:]]
    np.testing.assert_allclose(marks, res.eigenvalues())
    with pytest.raises(ValueError, match="density"):
        plot_density(deepscope.hessian(m, d, which="top", k=1, progress=False))

    class Ctx:
        model, dataset, seed, progress = m, d, 0, False
    fp = state_fingerprint(m)
    sec = hessian_section(Ctx)
    assert state_fingerprint(m) == fp
    assert sec.summary["top_eigenvalue"] == pytest.approx(
        deepscope.hessian(m, d, which="top", k=5, progress=False).summary["top_eigenvalue"],
        rel=1e-4)
    assert sec.figures and sec.tables
