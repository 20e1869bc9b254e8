"""Each injected pathology is detected (with its neurons and quantity); a clean net has none."""

import numpy as np
import pytest
import torch

from deepscope.errors import ConfigError
from deepscope.experiments.inverse_stability import inject_pathology
from deepscope.realization.canonical import canonicalize
from deepscope.realization.distance import realization_distance
from deepscope.realization.pathologies import PATHOLOGY_COLUMNS, detect_pathologies
from deepscope.realization.shallow import ShallowReLU

BOX = [(-1.0, 1.0)] * 2


def clean_net(n=6, seed=0):
    """Balanced neurons with well-separated directions, all active on the box."""
    ang = np.linspace(0, np.pi, n, endpoint=False) + 0.1  # directions in the upper half plane
    W = np.stack([np.cos(ang), np.sin(ang)], 1)
    b = np.full(n, 0.2)
    A = np.array([[1.0, -0.8, 0.9, -1.1, 0.7, 1.2][:n]]) * np.sqrt(1.04)
    return ShallowReLU.from_arrays(W, b, A, [0.1])


def test_clean_net_has_no_findings():
    res = detect_pathologies(clean_net(), BOX)
    assert res.table.empty and res.summary["clean"]
    assert list(res.table.columns) == list(PATHOLOGY_COLUMNS)


def test_clean_random_balanced_net():
    g = torch.Generator().manual_seed(3)
    net = canonicalize(ShallowReLU.from_arrays(torch.randn(8, 3, generator=g),
                                               torch.randn(8, generator=g) * 0.1,
                                               torch.randn(8, generator=g)))
    assert detect_pathologies(net, [(-1, 1)] * 3).table.empty


def _found(res, kind):
    return res.table[res.table["kind"] == kind]


def test_opposite_pair_is_affine_and_detected():
    base = clean_net()
    net = inject_pathology(base, "opposite", 10.0, BOX, seed=1)
    res = detect_pathologies(net, BOX)
    hit = _found(res, "opposite")
    assert len(hit) == 1
    row = hit.iloc[0]
    assert (row["neuron_i"], row["neuron_j"]) == (6, 7)
    assert row["value"] < 1e-12 and "affine pair" in row["detail"]
    assert realization_distance(base, net, BOX).sobolev < 1e-10


def test_parallel_split_is_detected_and_keeps_the_function():
    base = clean_net()
    net = inject_pathology(base, "parallel", 5.0, BOX)
    hit = _found(detect_pathologies(net, BOX), "parallel")
    assert len(hit) == 1 and hit.iloc[0]["neuron_j"] == 6
    assert realization_distance(base, net, BOX).sobolev < 1e-10


def test_vanishing_outer_weight_is_detected():
    base = clean_net()
    net = inject_pathology(base, "vanishing_outer", 10.0, BOX)
    res = detect_pathologies(net, BOX)
    hit = _found(res, "vanishing_outer")
    assert list(hit["neuron_i"]) == [6]
    assert hit.iloc[0]["value"] == pytest.approx(1e-5, rel=1e-6)  # 1e-4 / s
    assert list(_found(res, "unbalanced")["neuron_i"]) == [6]
    d = realization_distance(base, net, BOX)
    assert d.sup < 2e-8 and d.grad_sup == pytest.approx(10.0, rel=1e-6)  # W^{1,inf} sees it


def test_unbalanced_scales_are_detected():
    base = clean_net()
    net = inject_pathology(base, "unbalanced", 100.0, BOX, seed=2)
    hit = _found(detect_pathologies(net, BOX), "unbalanced")
    assert len(hit) >= 4
    vals = hit["value"].to_numpy()
    assert np.all((vals > 10) | (vals < 0.1))
    assert realization_distance(base, net, BOX).sobolev < 1e-10


def test_dead_neuron_is_detected_exactly_on_the_box():
    base = clean_net()
    net = inject_pathology(base, "dead", 3.0, BOX)
    hit = _found(detect_pathologies(net, BOX), "dead")
    assert list(hit["neuron_i"]) == [6]
    # the max pre-activation over the box is attained at a corner
    corners = np.array([[x, y] for x in (-1, 1) for y in (-1, 1)])
    pre = corners @ net.W[6].numpy() + float(net.b[6])
    assert hit.iloc[0]["value"] == pytest.approx(pre.max(), rel=1e-12)
    assert hit.iloc[0]["value"] == pytest.approx(-3.0, rel=1e-12)  # s (u·x - (max u·x + 1))
    assert realization_distance(base, net, BOX).sobolev < 1e-12  # round-off only
    # without a domain there is no dead check
    assert _found(detect_pathologies(net), "dead").empty


def test_thresholds_are_arguments():
    base = clean_net()
    net = inject_pathology(base, "unbalanced", 3.0, BOX, seed=2)
    assert _found(detect_pathologies(net, BOX, balance_ratio=1e6), "unbalanced").empty
    # the angle between neighbouring clean directions is pi/6: 1 - cos = 0.134
    assert len(_found(detect_pathologies(base, BOX, direction_tol=0.2), "parallel")) == 5
    with pytest.raises(ConfigError):
        detect_pathologies(base, BOX, balance_ratio=0.5)
    with pytest.raises(ConfigError):
        detect_pathologies(base, BOX, direction_tol=-1)
    with pytest.raises(ConfigError):
        inject_pathology(base, "zigzag", 2.0, BOX)


def test_dead_on_data_uses_the_points():
    base = clean_net()
    # active only where x1 > 0.5: alive on the box, dead on data with x1 <= 0.4
    net = ShallowReLU.from_arrays(torch.cat([base.W, torch.tensor([[1.0, 0.0]],
                                                                 dtype=torch.float64)]),
                                  torch.cat([base.b, torch.tensor([-0.5], dtype=torch.float64)]),
                                  torch.cat([base.A, torch.tensor([[1.0]], dtype=torch.float64)], 1),
                                  base.c)
    data = np.random.default_rng(0).uniform(-1, 0.4, size=(50, 2))
    data[:, 1] = np.random.default_rng(1).uniform(-1, 1, 50)
    hit = _found(detect_pathologies(net, data), "dead")
    assert list(hit["neuron_i"]) == [6]
    assert hit.iloc[0]["value"] == pytest.approx(data[:, 0].max() - 0.5, rel=1e-12)
    assert _found(detect_pathologies(net, BOX), "dead").empty
