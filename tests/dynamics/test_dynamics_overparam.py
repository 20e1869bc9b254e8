"""deepscope.experiments.overparam: a tiny run of Du et al.'s experiment, checked by hand."""
import math

import numpy as np
import pytest
import torch

from deepscope.dynamics.hinf import hinf_gram
from deepscope.errors import ConfigError
from deepscope.experiments.overparam import (TwoLayerReLU, _fit_rate, _slope,
                                             overparam_data, overparam_experiment)


@pytest.fixture(scope="module")
def res():
    return overparam_experiment(widths=(16, 4096), n=8, d=4, seeds=(0, 1), steps=60,
                                eval_points=6, progress=False)


def test_data_is_on_the_sphere_with_unit_rms_targets():
    x, y = overparam_data(12, 5, seed=1)
    assert x.shape == (12, 5) and y.shape == (12, 1)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(12, dtype=torch.float64))
    assert float(y.pow(2).mean()) == pytest.approx(1.0)
    assert abs(float(y.mean())) < 1e-12


def test_two_layer_net_is_du_parametrization():
    net = TwoLayerReLU(3, 50, seed=4)
    assert [n for n, _ in net.named_parameters()] == ["weight"]  # only W is trained
    assert set(net.a.tolist()) <= {-1.0, 1.0}
    x = torch.randn(6, 3, dtype=torch.float64)
    ref = (torch.relu(x @ net.weight.T) * net.a).sum(1, keepdim=True) / math.sqrt(50)
    torch.testing.assert_close(net(x), ref)


def test_tables_and_summary(res):
    t, s = res.table, res.summary
    assert len(t) == 4 and set(t["width"]) == {16, 4096}
    x, _ = overparam_data(8, 4)
    ev = np.linalg.eigvalsh(hinf_gram(x).numpy())
    assert s["lambda0"] == pytest.approx(ev[0]) and s["eta"] == pytest.approx(1 / ev[-1])
    assert s["eta"] > 100 * s["eta_theory_scale"]
    assert s["rate_theory"] == pytest.approx((1 - s["eta"] * ev[0]) ** 2)
    assert len(res.losses) == 4 * 61
    assert sorted(res.curves["step"].unique())[0] == 0
    assert res.curves["step"].max() == 60


def test_first_gradient_step_by_hand(res):
    x, y = overparam_data(8, 4)
    s = res.summary
    net = TwoLayerReLU(4, 16, seed=0)
    w, a = net.weight.detach().clone(), net.a
    u = net(x).detach()
    act = (x @ w.T >= 0).double()                           # (n, m)
    grad = ((u - y) * act * a).T @ x / math.sqrt(16)       # dL/dw_r
    w1 = w - s["eta"] * grad
    u1 = (torch.relu(x @ w1.T) @ a / 4.0).unsqueeze(1)
    loss1 = 0.5 * float(((u1 - y) ** 2).sum())
    got = res.losses[(res.losses.width == 16) & (res.losses.seed == 0)]
    assert float(got["loss"].iloc[0]) == pytest.approx(0.5 * float(((u - y) ** 2).sum()))
    assert float(got["loss"].iloc[1]) == pytest.approx(loss1, rel=1e-10)


def test_wider_is_lazier_and_converges_linearly(res):
    t = res.table.groupby("width").mean(numeric_only=True)
    for col in ("drift", "max_displacement", "rel_displacement", "init_error", "flipped"):
        assert t.loc[4096, col] < t.loc[16, col] / 3, col
    wide = res.table[res.table.width == 4096]
    assert wide["above_half"].all() and (wide["min_ratio"] > 0.8).all()
    assert (wide["loss_final"] < 1e-3 * wide["loss_init"]).all()
    assert (wide["rate_r2"] > 0.98).all()
    # the fitted rate of the wide net is close to the slowest mode of H-inf
    assert wide["rate"].mean() == pytest.approx(res.summary["rate_theory"], abs=0.05)
    assert res.summary["slope_init_error"] < -0.3


def test_rate_and_slope_helpers():
    loss = 5.0 * 0.9 ** np.arange(200)
    rate, r2, used = _fit_rate(loss)
    assert rate == pytest.approx(0.9, rel=1e-10) and r2 == pytest.approx(1.0)
    assert used > 100
    ms = np.array([10.0, 100.0, 1000.0])
    assert _slope(ms, 3 * ms ** -0.5) == pytest.approx(-0.5)
    assert math.isnan(_slope(ms, np.array([1.0, np.nan, -1.0])))


def test_bad_options():
    with pytest.raises(ConfigError, match="step_scale"):
        overparam_experiment(widths=(8,), step_scale=2.5, progress=False)
    with pytest.raises(ConfigError, match="widths"):
        overparam_experiment(widths=(), progress=False)
    with pytest.raises(ConfigError, match="steps"):
        overparam_experiment(widths=(8,), steps=0, progress=False)
    with pytest.raises(ConfigError, match="n must"):
        overparam_experiment(widths=(8,), n=1, progress=False)
