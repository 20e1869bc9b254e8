"""Balancing, canonical order and Hungarian matching (against brute force over permutations)."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ShapeError
from deepscope.realization.canonical import (canonical_form, canonicalize, match_neurons,
                                             parameter_distance)
from deepscope.realization.shallow import ShallowReLU


def random_net(n=6, d=3, m=2, seed=0) -> ShallowReLU:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return ShallowReLU.from_arrays(r(n, d), r(n), r(m, n), r(m))


def symmetric_copy(net: ShallowReLU, seed=1, spread=100.0) -> ShallowReLU:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(net.num_neurons, generator=g)
    s = spread ** (2 * torch.rand(net.num_neurons, generator=g, dtype=torch.float64) - 1)
    return ShallowReLU(net.W[perm] * s[:, None], net.b[perm] * s, net.A[:, perm] / s, net.c)


def xs(d=3, n=500, seed=3):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64) * 2


def test_canonicalization_keeps_the_function_and_balances():
    net = random_net()
    # a constant neuron (w = 0, b > 0), a zero-outer neuron and a zero-inner neuron
    W, b, A = net.W.clone(), net.b.clone(), net.A.clone()
    W[1] = 0.0
    b[1] = 0.7
    A[:, 2] = 0.0
    W[3], b[3] = 0.0, 0.0
    net = ShallowReLU(W, b, A, net.c)
    form = canonical_form(net)
    can = form.net
    x = xs()
    assert torch.allclose(can(x), net(x), atol=1e-6, rtol=0)
    assert float((can(x) - net(x)).abs().max()) < 1e-12
    vn = torch.linalg.vector_norm(can.inner, dim=1)
    an = torch.linalg.vector_norm(can.A, dim=0)
    assert torch.allclose(vn, an, atol=1e-12)
    assert form.constant == (1, 3)  # w = 0: constant a ReLU(b) (0 for neuron 3)
    assert set(form.zeroed) == {1, 2, 3}
    assert (vn[-3:] == 0).all() and (vn[:-3] > 0).all()
    assert (torch.diff(vn[:-3]) <= 0).all()  # decreasing magnitudes
    # neuron i of the canonical net is original order[i] rescaled by scales[i]
    for i, k in enumerate(form.order[:3]):
        assert torch.allclose(can.W[i], net.W[k] * form.scales[i], atol=1e-12)


def test_canonical_form_is_invariant_under_symmetries():
    net = random_net(n=7)
    a, b = canonicalize(net), canonicalize(symmetric_copy(net))
    assert torch.allclose(a.parameter_vector(), b.parameter_vector(), atol=1e-9)


@pytest.mark.parametrize("ord", [1, 2, math.inf])
def test_symmetric_copy_is_at_distance_zero(ord):
    net = random_net(n=8)
    other = symmetric_copy(net)
    x = xs()
    assert torch.allclose(net(x), other(x), atol=1e-9)
    assert parameter_distance(net, other, ord=ord) < 1e-6
    assert parameter_distance(net, other, modulo_symmetries=False, ord=ord) > 1.0


def _brute_distance(a, b, ord):
    """Min over all permutations of the ord-distance of the canonical parameter rows."""
    ca, cb = canonicalize(a), canonicalize(b)
    ta = torch.cat([ca.W, ca.b[:, None], ca.A.T], 1).numpy()
    tb = torch.cat([cb.W, cb.b[:, None], cb.A.T], 1).numpy()
    dc = (ca.c - cb.c).numpy()
    best = math.inf
    for p in itertools.permutations(range(len(tb))):
        diff = np.concatenate([(ta - tb[list(p)]).ravel(), dc])
        best = min(best, float(np.linalg.norm(diff, ord)))
    return best


@pytest.mark.parametrize("ord", [1, 2, math.inf])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_matching_equals_brute_force(ord, seed):
    a, b = random_net(n=5, seed=seed), random_net(n=5, seed=seed + 10)
    got = parameter_distance(a, b, ord=ord)
    assert got == pytest.approx(_brute_distance(a, b, ord), rel=1e-10, abs=1e-12)
    m = match_neurons(a, b, ord=ord)
    assert sorted(m.order_b) == list(range(5)) and sorted(m.order_a) == list(range(5))


def test_different_widths_are_padded_with_zero_neurons():
    net = random_net(n=4)
    extra = ShallowReLU(torch.cat([net.W, torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64)]),
                        torch.cat([net.b, torch.tensor([0.0], dtype=torch.float64)]),
                        torch.cat([net.A, torch.tensor([[0.25], [0.0]], dtype=torch.float64)], 1),
                        net.c)
    # balanced extra neuron: ‖v‖ = 3, ‖a‖ = 0.25, ρ = sqrt(0.75); ‖θ‖ = sqrt(2) ρ
    assert parameter_distance(net, extra) == pytest.approx(math.sqrt(1.5), rel=1e-12)
    zero_outer = ShallowReLU(extra.W, extra.b, torch.cat([net.A, torch.zeros(2, 1,
                                                          dtype=torch.float64)], 1), net.c)
    assert parameter_distance(net, zero_outer) < 1e-12
    m = match_neurons(net, extra)
    assert m.num_real_a == 4 and m.num_real_b == 5 and -1 in m.order_a
    raw = parameter_distance(net, extra, modulo_symmetries=False)
    assert raw == pytest.approx(math.sqrt(9 + 0.25 ** 2), rel=1e-12)


def test_modules_untouched_and_errors():
    a = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    b = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    assert parameter_distance(a, b) > 0
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb
    with pytest.raises(ConfigError, match="ord"):
        parameter_distance(a, b, ord=3)
    with pytest.raises(ShapeError):
        parameter_distance(a, nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)))
