"""deepscope.realization: the probe's table and summary against the building blocks."""
import json
import math

import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ModelError
from deepscope.nets import build_model
from deepscope.realization.canonical import parameter_distance
from deepscope.realization.probe import realization
from deepscope.realization.result import NEURON_COLUMNS, RealizationResult
from deepscope.realization.shallow import extract_shallow


def mlp(seed, width=6, d=2):
    return build_model({"arch": "mlp", "widths": [width], "input_shape": [d],
                        "num_outputs": 1}, seed=seed)


def test_probe_on_two_mlps():
    a, b = mlp(0), mlp(1, width=8)
    b.train()
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    res = realization(a, b, [(-2, 2), (-1, 1)], samples=400)
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb
    assert isinstance(res, RealizationResult)
    assert list(res.table.columns) == list(NEURON_COLUMNS)
    assert len(res.table) == 8  # the wider net; a is padded with 2 zero neurons
    assert (res.table["neuron_a"] == -1).sum() == 2
    s = res.summary
    assert s["param_distance"] == pytest.approx(parameter_distance(a, b), rel=1e-12)
    assert s["param_distance_raw"] == pytest.approx(
        parameter_distance(a, b, modulo_symmetries=False), rel=1e-12)
    # the table's per-neuron distances make up the total (ord 2, with the output bias)
    na, nb = extract_shallow(a), extract_shallow(b)
    dc = float((na.c - nb.c).norm())
    assert math.sqrt((res.table["distance"] ** 2).sum() + dc ** 2) == pytest.approx(
        s["param_distance"], rel=1e-10)
    # realization distances against a direct evaluation of the two modules on the grid
    pts = torch.as_tensor(res.samples["points"], dtype=torch.float32)
    with torch.no_grad():
        a.eval()
        b.eval()
        direct = (a(pts) - b(pts)).abs().max().item()
    assert s["sup"] == pytest.approx(direct, rel=1e-4)
    assert s["sobolev"] == pytest.approx(s["sup"] + s["grad_sup"])
    assert s["width_a"] == 6 and s["width_b"] == 8
    d = json.loads(res.to_json())
    assert "pathologies" in d and d["kind"] == "realization"


def test_symmetric_copy_has_zero_distances_and_pathologies_are_listed():
    a = mlp(2)
    b = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 1)).double()
    net = extract_shallow(a)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    s = torch.tensor([50.0, 0.02, 1.0, 3.0, 0.5, 20.0], dtype=torch.float64)
    with torch.no_grad():
        b[0].weight.copy_(net.W[perm] * s[:, None])
        b[0].bias.copy_(net.b[perm] * s)
        b[2].weight.copy_(net.A[:, perm] / s)
        b[2].bias.copy_(net.c)
    res = realization(a, b, (-1, 1), samples=256)
    assert res.summary["param_distance"] < 1e-6
    assert res.summary["param_distance_raw"] > 1
    assert res.summary["sup"] < 1e-6
    unb = res.pathologies[(res.pathologies["net"] == "b") &
                          (res.pathologies["kind"] == "unbalanced")]
    assert set(unb["neuron_i"]) >= {0, 1, 5}  # scales 50, 0.02, 20
    assert res.summary["pathologies_b"]["unbalanced"] == len(unb)


def test_data_domain_and_errors():
    a, b = mlp(0), mlp(1)
    x = torch.randn(30, 2)
    res = realization(a, b, x, samples=100)
    assert res.summary["num_points"] == 100 + 30
    assert "data points" in res.settings["domain"]
    with pytest.raises(ModelError):
        realization(a, nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    with pytest.raises(ConfigError):
        realization(a, b, ord="two")
