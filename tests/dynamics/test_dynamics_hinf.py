"""deepscope.dynamics.hinf: H-infinity of Du et al. against Monte Carlo, the angle formula,
special cases, PSD-ness, and against the empirical NTK of a wide two-layer ReLU net."""
import math

import numpy as np
import pytest
import torch

from deepscope.dynamics.hinf import hinf_gram, hinf_lambda0, unit_rows
from deepscope.dynamics.ntk import ntk
from deepscope.errors import ConfigError, ShapeError
from deepscope.experiments.overparam import TwoLayerReLU
from dynamics_reference import angle_gram, du_gram, monte_carlo_hinf


def _sphere(n, d, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def test_matches_monte_carlo_expectation():
    x = _sphere(6, 4)
    mc = monte_carlo_hinf(x, num_samples=400_000)
    # each entry is a mean of 400k bounded terms: standard error <= 0.5/sqrt(4e5) < 1e-3
    np.testing.assert_allclose(hinf_gram(x).numpy(), mc.numpy(), atol=4e-3)


def test_matches_elementwise_angle_formula_and_special_cases():
    x = _sphere(8, 3, seed=1)
    np.testing.assert_allclose(hinf_gram(x).numpy(), angle_gram(x).numpy(), atol=1e-14)
    e = torch.eye(3, dtype=torch.float64)
    pts = torch.stack([e[0], e[1], -e[0], e[0]])
    H = hinf_gram(pts)
    assert float(H[0, 0]) == pytest.approx(0.5)          # same point: 1 * pi / (2 pi)
    assert float(H[0, 1]) == pytest.approx(0.0, abs=1e-15)  # orthogonal
    assert float(H[0, 2]) == pytest.approx(0.0, abs=1e-15)  # opposite: arccos(-1) = pi
    assert float(H[0, 3]) == pytest.approx(0.5)
    c = 0.5  # 60 degrees: 0.5 * (pi - pi/3) / (2 pi) = 1/6
    pts = torch.tensor([[1.0, 0.0], [c, math.sqrt(1 - c * c)]], dtype=torch.float64)
    assert float(hinf_gram(pts)[0, 1]) == pytest.approx(1 / 6)


def test_cosines_beyond_one_are_clipped():
    x = _sphere(3, 5)
    x = torch.cat([x, x[:1] * (1 + 1e-9)])  # a rounding-level duplicate: cos slightly > 1
    H = hinf_gram(x)
    assert torch.isfinite(H).all()
    assert float(H[0, 3]) == pytest.approx(0.5, abs=1e-8)


def test_psd_with_positive_lambda0_and_zero_for_parallel_inputs():
    for seed in range(3):
        x = _sphere(25, 6, seed=seed)
        H = hinf_gram(x).numpy()
        ev = np.linalg.eigvalsh(H)
        assert ev[0] > 1e-4
        assert hinf_lambda0(x) == pytest.approx(ev[0], rel=1e-12)
        np.testing.assert_allclose(H, H.T, atol=0)
    x = _sphere(5, 6)
    dup = torch.cat([x, x[:1]])  # two parallel inputs: H has two equal rows
    assert abs(hinf_lambda0(dup)) < 1e-12


def test_unit_norm_required_unless_normalize():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)) * 3
    with pytest.raises(ConfigError, match="unit-norm"):
        hinf_gram(x)
    u = x.double() / x.double().norm(dim=1, keepdim=True)
    np.testing.assert_allclose(hinf_gram(x, normalize=True).numpy(), hinf_gram(u).numpy(),
                               atol=1e-7)
    with pytest.raises(ConfigError, match="zero"):
        hinf_gram(torch.zeros(2, 3), normalize=True)
    with pytest.raises(ShapeError):
        unit_rows(torch.ones(3))
    assert unit_rows(np.eye(3)).dtype == torch.float64


def test_du_net_ntk_is_the_indicator_gram():
    x = _sphere(7, 4, seed=2)
    net = TwoLayerReLU(4, 300, seed=0)
    r = ntk(net, x, dtype=torch.float64)
    np.testing.assert_allclose(r.gram.numpy(), du_gram(net, x).numpy(), rtol=1e-10,
                               atol=1e-12)


def test_wide_net_ntk_approaches_hinf():
    x = _sphere(12, 5, seed=3)
    H = hinf_gram(x)
    errs = {}
    for m in (200, 20000):
        e = []
        for seed in range(3):
            g = ntk(TwoLayerReLU(5, m, seed=seed), x, dtype=torch.float64).gram
            e.append(float((g - H).norm() / H.norm()))
        errs[m] = float(np.mean(e))
    assert errs[20000] < 0.03
    # Monte-Carlo rate m^{-1/2}: 100x the width, about 10x smaller (allow 4x-25x)
    assert 4 < errs[200] / errs[20000] < 25
