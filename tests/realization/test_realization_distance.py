"""Realization distances against brute-force evaluation and finite differences."""
import math

import numpy as np
import pytest
import torch

from deepscope.errors import ConfigError, ShapeError
from deepscope.realization.distance import (realization_distance, resolve_domain,
                                            sample_domain)
from deepscope.realization.shallow import ShallowReLU


def random_net(n=6, d=2, m=1, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return ShallowReLU.from_arrays(r(n, d), r(n), scale * r(m, n), r(m))


def np_eval(net, x):
    W, b, A, c = (t.numpy() for t in (net.W, net.b, net.A, net.c))
    return np.maximum(x @ W.T + b, 0) @ A.T + c


def test_sup_matches_brute_force_on_the_same_points():
    a, b = random_net(d=2, m=2, seed=0), random_net(d=2, m=2, seed=1)
    res = realization_distance(a, b, [(-1, 2), (0, 1)], samples=900)
    pts = res.points
    assert pts.shape == (900, 2)  # 30 x 30 grid
    assert pts[:, 0].min() == -1 and pts[:, 0].max() == 2 and pts[:, 1].max() == 1
    brute = np.linalg.norm(np_eval(a, pts) - np_eval(b, pts), axis=1)
    assert res.sup == pytest.approx(brute.max(), rel=1e-12)
    assert res.rms == pytest.approx(math.sqrt(np.mean(brute ** 2)), rel=1e-12)
    assert res.sup_a == pytest.approx(np.linalg.norm(np_eval(a, pts), axis=1).max())
    assert res.sobolev == pytest.approx(res.sup + res.grad_sup)


def test_gradient_difference_matches_finite_differences():
    a, b = random_net(d=3, m=2, seed=2), random_net(d=3, m=2, seed=3)
    res = realization_distance(a, b, (-1, 1), samples=200, seed=5)
    assert res.points.shape == (200, 3)  # uniform sample for d > 2
    h = 1e-6
    fd = []
    for x in res.points:
        cols = []
        for j in range(3):
            e = np.zeros(3)
            e[j] = h
            da = (np_eval(a, x + e) - np_eval(a, x - e)) / (2 * h)
            db = (np_eval(b, x + e) - np_eval(b, x - e)) / (2 * h)
            cols.append(da - db)
        fd.append(np.linalg.norm(np.stack(cols)))
    fd = np.array(fd)
    # points within h of a kink have a wrong finite difference: compare away from kinks
    pre = np.concatenate([res.points @ n.W.numpy().T + n.b.numpy() for n in (a, b)], 1)
    far = np.abs(pre).min(1) > 1e-4
    assert far.sum() > 150
    np.testing.assert_allclose(res.grad_diff[far], fd[far], atol=1e-6)
    assert res.grad_sup >= fd[far].max() - 1e-6


def test_one_dimension_is_exact():
    a, b = random_net(n=8, d=1, seed=4), random_net(n=8, d=1, seed=5)
    res = realization_distance(a, b, (-3, 3), samples=16)
    assert res.exact
    fine = np.linspace(-3, 3, 400001)[:, None]
    brute = np.abs(np_eval(a, fine) - np_eval(b, fine)).max()
    # the sampled kinks give the true sup; the fine grid can only be below it
    assert res.sup >= brute - 1e-12
    assert res.sup == pytest.approx(brute, rel=1e-6)
    grad = np.abs(np.diff((np_eval(a, fine) - np_eval(b, fine))[:, 0]) / np.diff(fine[:, 0]))
    assert res.grad_sup == pytest.approx(grad.max(), rel=1e-4)


def test_data_domain_adds_the_points_and_their_box():
    data = np.random.default_rng(0).normal(size=(40, 2))
    dom = resolve_domain(data, 2)
    np.testing.assert_allclose(dom.box[:, 0], data.min(0))
    pts = sample_domain(dom, samples=100)
    assert len(pts) == 100 + 40
    a, b = random_net(seed=6), random_net(seed=7)
    res = realization_distance(a, b, torch.as_tensor(data), samples=100)
    assert res.num_points == 140


def test_identical_nets_are_at_distance_zero():
    a = random_net(seed=8)
    res = realization_distance(a, a, (-1, 1))
    assert res.sup == 0 and res.grad_sup == 0


def test_bad_domains():
    a = random_net()
    with pytest.raises(ConfigError):
        realization_distance(a, a, (1, -1))
    with pytest.raises(ShapeError):
        realization_distance(a, a, [(0, 1)] * 3)
    with pytest.raises(ShapeError):
        realization_distance(a, a, np.zeros((5, 3)))
    with pytest.raises(ConfigError):
        realization_distance(a, a, "box")
    with pytest.raises(ConfigError):
        realization_distance(a, a, (0, 1), samples=0)
