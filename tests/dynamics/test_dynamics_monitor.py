"""deepscope.dynamics.monitor: NTKMonitor during training, against manual computations."""
import copy

import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.dynamics.monitor import (MONITOR_COLUMNS, GramTracker, NTKMonitor,
                                        activation_patterns, flipped_fraction,
                                        weight_displacement)
from deepscope.dynamics.ntk import ntk
from deepscope.errors import ConfigError


@pytest.fixture(scope="module")
def run():
    from deepscope.data import load_dataset
    from deepscope.nets import build_model, complete_arch_spec
    from deepscope.train import train
    ds = load_dataset({"name": "digits", "n_train": 120, "n_test": 30})
    spec = complete_arch_spec({"arch": "mlp", "widths": [12, 9], "input_shape": [64],
                               "num_outputs": 10})
    model = build_model(spec, seed=0)
    mon = NTKMonitor(ds.x_train[:10], every=2)
    res = train(model, ds, {"optimizer": "sgd", "lr": 0.2, "epochs": 4, "batch_size": 30},
                callbacks=[mon], progress=False)
    init = copy.deepcopy(res.model)
    init.load_state_dict(res.init_params, strict=False)
    return ds, mon, res, init


def test_history_columns_and_init_row(run):
    ds, mon, res, _ = run
    h = res.history
    assert list(h["epoch"]) == [0, 1, 2, 3, 4]
    for c in MONITOR_COLUMNS:
        assert f"ntk/{c}" in h
    t = mon.table
    assert list(t["epoch"]) == [0, 2, 4]  # every=2
    first = t.iloc[0]
    assert first["drift"] == 0.0 and first["flipped"] == 0.0
    assert first["max_displacement"] == 0.0 and first["rel_displacement"] == 0.0
    assert first["lambda_min"] == first["lambda_min_init"] > 0
    assert t["drift"].iloc[-1] > 0 and t["rel_displacement"].iloc[-1] > 0
    assert set(mon.eigenvalues) == {0, 2, 4}


def test_final_row_against_manual_computation(run):
    ds, mon, res, init = run
    x = ds.x_train[:10]
    last = mon.table.iloc[-1]
    g0, g1 = ntk(init, x).gram.double(), ntk(res.model, x).gram.double()
    assert last["drift"] == pytest.approx(float((g1 - g0).norm() / g0.norm()), rel=1e-6)
    assert last["lambda_min_init"] == pytest.approx(float(torch.linalg.eigvalsh(g0)[0]),
                                                    rel=1e-5)
    assert last["lambda_min"] == pytest.approx(float(torch.linalg.eigvalsh(g1)[0]), rel=1e-5)

    def pre_acts(net):  # the MLP by hand: fc1 -> relu -> fc2 -> relu -> out
        with torch.no_grad():
            z1 = x @ net.fc1.weight.T + net.fc1.bias
            z2 = torch.relu(z1) @ net.fc2.weight.T + net.fc2.bias
        return [z1 > 0, z2 > 0]
    before, after = pre_acts(init), pre_acts(res.model)
    flips = sum(int((a != b).sum()) for a, b in zip(before, after))
    total = sum(a.numel() for a in before)
    assert last["flipped"] == pytest.approx(flips / total, abs=1e-12)
    assert flips > 0

    diffs = {n: (p.detach().double() - res.init_params[n].double())
             for n, p in res.model.named_parameters()}
    rows = max(float(d.norm(dim=1).max()) if d.dim() == 2 else float(d.abs().max())
               for d in diffs.values())
    assert last["max_displacement"] == pytest.approx(rows, rel=1e-9)
    assert last["max_abs_displacement"] == pytest.approx(
        max(float(d.abs().max()) for d in diffs.values()), rel=1e-9)
    num = sum(float((d ** 2).sum()) for d in diffs.values()) ** 0.5
    den = sum(float((p.double() ** 2).sum()) for p in res.init_params.values()) ** 0.5
    assert last["rel_displacement"] == pytest.approx(num / den, rel=1e-9)
    r = mon.result()
    assert r.kind == "ntk-monitor" and r.summary["final_drift"] == pytest.approx(last["drift"])


class _Twice(nn.Module):
    """One in-place ReLU module used twice in a forward."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.b(self.act(self.a(x))))


def test_activation_patterns_inplace_and_reused_relu():
    net = _Twice().double()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fp = state_fingerprint(net)
    pats = activation_patterns(net, x, batch_size=2)
    assert state_fingerprint(net) == fp
    assert not net.act._forward_pre_hooks  # hooks removed
    with torch.no_grad():
        z1 = net.a(x)
        z2 = net.b(torch.relu(z1))
    assert torch.equal(pats["act"], z1 > 0)     # read before the in-place op
    assert torch.equal(pats["act#2"], z2 > 0)
    assert set(pats) == {"act", "act#2"}  # the module's own F.relu is not counted again
    assert flipped_fraction(pats, pats) == 0.0
    other = {k: ~v for k, v in pats.items()}
    assert flipped_fraction(pats, other) == 1.0
    with pytest.raises(ConfigError):
        flipped_fraction(pats, {"act": pats["act"]})
    assert flipped_fraction({}, {}) != flipped_fraction({}, {})  # NaN without ReLUs


def test_weight_displacement_by_hand():
    init = {"w": torch.zeros(2, 2), "b": torch.ones(2)}
    now = {"w": torch.tensor([[3.0, 4.0], [0.0, 1.0]]), "b": torch.tensor([1.0, -1.0])}
    d = weight_displacement(now, init)
    assert d["max_displacement"] == pytest.approx(5.0)       # row (3, 4)
    assert d["max_abs_displacement"] == pytest.approx(4.0)
    assert d["rel_displacement"] == pytest.approx((25 + 1 + 4) ** 0.5 / 2 ** 0.5)


def test_tracker_leaves_model_untouched_and_every_is_checked():
    net = _Twice()
    net.train()
    fp = state_fingerprint(net)
    tr = GramTracker(net, torch.randn(4, 3))
    row = tr.measure(net)
    assert row["drift"] == 0.0 and row["flipped"] == 0.0
    assert state_fingerprint(net) == fp and net.training
    with pytest.raises(ConfigError, match="every"):
        NTKMonitor(torch.randn(4, 3), every=0)


class _Functional(nn.Module):
    """ReLUs written as calls: F.relu, Tensor.relu_ and a module, mixed."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.b = nn.Linear(6, 5)
        self.c = nn.Linear(5, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        h = torch.nn.functional.relu(self.a(x))
        h = self.b(h).relu_()
        return self.c(self.act(h - 0.1))


def test_activation_patterns_of_functional_relus():
    net = _Functional().double()
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pats = activation_patterns(net, x, batch_size=3)
    with torch.no_grad():
        z1 = net.a(x)
        z2 = net.b(torch.relu(z1))
        z3 = torch.relu(z2) - 0.1
    assert set(pats) == {"relu()", "relu()#2", "act"}
    assert torch.equal(pats["relu()"], z1 > 0)
    assert torch.equal(pats["relu()#2"], z2 > 0)  # read before the in-place op
    assert torch.equal(pats["act"], z3 > 0)
    with torch.no_grad():
        net.a.bias.add_(10.0)  # every first-layer unit active now
    moved = activation_patterns(net, x, batch_size=3)
    flips = int((pats["relu()"] != moved["relu()"]).sum()) + sum(
        int((pats[k] != moved[k]).sum()) for k in ("relu()#2", "act"))
    total = sum(v.numel() for v in pats.values())
    assert flipped_fraction(pats, moved) == pytest.approx(flips / total)
    assert flips > 0
