"""connect(): DSS, straight segment and curves against closed forms on toy losses.

Toys with known losses:
- a linear model with MSE (convex in its parameters: every level set is convex), whose loss
  along a segment is a quadratic in t computed in float64;
- the scalar chain f(x) = w2·w1·x fitted to y = x: L(w1, w2) = (w1·w2 − 1)² · mean(x²); its
  level sets are bands around the hyperbola w1·w2 = 1 (connected, not convex).
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepscope import ConfigError, build_model
from deepscope._params import state_fingerprint
from deepscope.landscape.connect import connect
from deepscope.landscape.curves import curve_length, curve_point
from deepscope.landscape.dss import geodesic_length

X = torch.linspace(0.5, 1.5, 64).unsqueeze(1)
Y = X.clone()
MX2 = float((X.double() ** 2).mean())

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def chain(w1: float, w2: float) -> nn.Module:
    m = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        m[0].weight.fill_(w1)
        m[1].weight.fill_(w2)
    return m


def chain_loss(theta) -> float:
    """Closed form of the chain's MSE at θ = (w1, w2), float64."""
    w1, w2 = (float(v) for v in theta)
    return (w1 * w2 - 1.0) ** 2 * MX2


# ----------------------------------------------------------------------------- convex case

@pytest.fixture(scope="module")
def linreg():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * torch.randn(200, 1, generator=g)
    xd = torch.cat([x, torch.ones(200, 1)], 1).double()
    opt = torch.linalg.lstsq(xd, y.double()).solution.squeeze(1)  # [w, b]
    models = []
    for k in range(2):
        d = 0.3 * torch.randn(4, generator=g, dtype=torch.float64)
        m = nn.Linear(3, 1)
        with torch.no_grad():
            m.weight.copy_((opt[:3] + d[:3]).float().unsqueeze(0))
            m.bias.copy_((opt[3:] + d[3:]).float())
        models.append(m)
    return models[0], models[1], (x, y), xd, y.double()


def _lin_loss(theta, xd, y):
    return float(((xd @ theta.double().unsqueeze(1) - y) ** 2).mean())


def test_dss_on_convex_level_set_is_the_straight_segment(linreg):
    a, b, data, xd, y = linreg
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    ta = torch.cat([a.weight.detach().reshape(-1), a.bias.detach()])
    tb = torch.cat([b.weight.detach().reshape(-1), b.bias.detach()])
    L0 = max(_lin_loss(ta, xd, y), _lin_loss(tb, xd, y))
    r = connect(a, b, data, "dss", L0, tol=1e-5, grid=25, progress=False)
    assert r.summary["connected"] == "yes" and r.summary["num_beads"] == 2
    assert abs(r.summary["normalized_length"] - 1.0) < 1e-6
    assert r.summary["beads_trained"] == 0 and r.summary["depth"] == 0
    # the profile is the convex quadratic along the segment (float64 closed form)
    ref = [_lin_loss((1 - t) * ta + t * tb, xd, y) for t in r.table["t"]]
    np.testing.assert_allclose(r.table["level"], ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r.table["position"], r.table["t"], atol=1e-12)
    assert r.summary["max_level"] <= L0 * (1 + 1e-5)
    assert torch.equal(r.beads[0], ta) and torch.equal(r.beads[1], tb)
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb


# ----------------------------------------------------------------------------- lengths

def test_geodesic_length_by_hand():
    pts = [torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0]), torch.tensor([6.0, 0.0])]
    assert geodesic_length(pts) == pytest.approx(10.0 / 6.0, rel=1e-12)
    pts = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 3.0, 1.0]),
           torch.tensor([2.0, 3.0, 1.0]), torch.tensor([2.0, 3.0, 4.0])]
    hand = (2.0 + 1.0 + 3.0) / math.sqrt(1 + 4 + 9)
    assert geodesic_length(pts) == pytest.approx(hand, rel=1e-12)
    with pytest.raises(ConfigError):
        geodesic_length([torch.zeros(2), torch.ones(2), torch.zeros(2)])


def test_curve_lengths_against_fine_polylines():
    a, c, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    assert curve_length("polychain", a, c, b) == pytest.approx(
        math.sqrt(5) + math.sqrt(8), rel=1e-12)
    ts = torch.linspace(0, 1, 20001, dtype=torch.float64).unsqueeze(1)
    pts = curve_point("bezier", ts, a.double(), c.double(), b.double())  # broadcast over t
    poly = float(torch.linalg.vector_norm(pts[1:] - pts[:-1], dim=1).sum())
    assert curve_length("bezier", a, c, b) == pytest.approx(poly, rel=1e-7)
    # the polychain passes through the bend at t = 1/2, the Bezier curve through (a+2c+b)/4
    assert torch.allclose(curve_point("polychain", 0.5, a, c, b), c)
    assert torch.allclose(curve_point("bezier", 0.5, a, c, b), (a + 2 * c + b) / 4)


# ----------------------------------------------------------------------------- non-convex toy

def test_linear_segment_leaves_the_band():
    a, b = chain(1.0, 1.0), chain(4.0, 0.25)
    r = connect(a, b, (X, Y), "linear", 0.01, grid=21, progress=False)
    assert r.summary["connected"] == "no"
    pts = [(1 - t) * torch.tensor([1.0, 1.0]) + t * torch.tensor([4.0, 0.25])
           for t in r.table["t"]]
    np.testing.assert_allclose(r.table["level"], [chain_loss(p) for p in pts],
                               rtol=1e-5, atol=1e-8)
    assert r.summary["max_level"] == pytest.approx(max(chain_loss(p) for p in pts), rel=1e-5)


@pytest.mark.parametrize("bead", ["max", "midpoint"])
def test_dss_trains_beads_on_a_nonconvex_band(bead):
    a, b = chain(1.0, 1.0), chain(4.0, 0.25)
    fa = state_fingerprint(a)
    L0, alpha = 0.01, 0.9
    r = connect(a, b, (X, Y), "dss", L0, alpha=alpha, bead=bead,
                bead_train={"lr": 0.05, "max_steps": 500}, progress=False)
    s = r.summary
    assert s["connected"] == "yes"
    assert s["num_beads"] == len(r.beads) > 2
    assert s["beads_inserted"] == s["num_beads"] - 2
    # every inserted bead was trained below alpha*L0 (closed-form check)
    for theta in r.beads[1:-1]:
        assert chain_loss(theta) <= alpha * L0 * (1 + 1e-5)
    for e in s["bead_log"]:
        assert e["reached_alpha"] and e["inserted"]
        assert e["level_final"] == pytest.approx(chain_loss(r.beads[e["path_index"]]),
                                                 rel=1e-4, abs=1e-8)
    # every grid point of the final path is in the level set, and matches the closed form
    assert (r.table["level"] <= L0).all()
    seg = r.table["segment"].to_numpy()
    ref = [chain_loss((1 - t) * r.beads[k] + t * r.beads[k + 1])
           for k, t in zip(seg, r.table["t"])]
    np.testing.assert_allclose(r.table["level"], ref, rtol=1e-4, atol=1e-7)
    # the normalized length by hand from the returned beads
    p = [t.double().numpy() for t in r.beads]
    hand = sum(np.linalg.norm(q - o) for o, q in zip(p[:-1], p[1:])) / np.linalg.norm(
        p[-1] - p[0])
    assert s["normalized_length"] == pytest.approx(hand, rel=1e-9)
    assert s["normalized_length"] > 1.0
    assert r.table["position"].iloc[-1] == pytest.approx(hand, rel=1e-9)
    assert state_fingerprint(a) == fa


def test_bead_starts_at_the_highest_grid_point_of_a_failing_segment():
    # a slightly off the hyperbola: the loss along the segment is not symmetric in t
    a, b = chain(1.0, 1.05), chain(4.0, 0.25)
    r = connect(a, b, (X, Y), "dss", 0.01, grid=20, max_depth=1,
                bead_train={"lr": 0.05}, progress=False)
    first = r.summary["bead_log"][0]
    ts = np.linspace(0, 1, 20)
    pts = [(1 - t) * np.array([1.0, 1.05]) + t * np.array([4.0, 0.25]) for t in ts]
    k = int(np.argmax([chain_loss(p) for p in pts]))
    assert first["depth"] == 1 and first["t_init"] == pytest.approx(ts[k])
    assert first["level_init"] == pytest.approx(chain_loss(pts[k]), rel=1e-5)
    assert r.summary["depth"] <= 1


def test_bezier_beats_the_straight_line():
    a, b = chain(1.0, 1.0), chain(4.0, 0.25)
    lin = connect(a, b, (X, Y), "linear", 0.01, progress=False)
    bz = connect(a, b, (X, Y), "bezier", 0.01, points=61,
                 bead_train={"lr": 0.05, "max_steps": 600, "batch_size": 16}, progress=False)
    assert len(bz.table) == 61
    assert bz.summary["max_level"] < 0.1 * lin.summary["max_level"]
    ta, tc, tb = bz.beads
    ref = [chain_loss(curve_point("bezier", t, ta, tc, tb)) for t in bz.table["t"]]
    np.testing.assert_allclose(bz.table["level"], ref, rtol=1e-4, atol=1e-8)
    chord = float(torch.linalg.vector_norm((tb - ta).double()))
    assert bz.summary["normalized_length"] == pytest.approx(
        curve_length("bezier", ta, tc, tb) / chord, rel=1e-9)
    pc = connect(a, b, (X, Y), "polychain", 0.01,
                 bead_train={"lr": 0.05, "max_steps": 600, "batch_size": 16}, progress=False)
    assert pc.summary["max_level"] < 0.2 * lin.summary["max_level"]
    assert set(pc.table["segment"]) == {0, 1}


# ----------------------------------------------------------------------------- engines

def _spec_chain(w1, w2):
    m = build_model({"arch": "mlp", "widths": [1], "bias": False, "input_shape": [1],
                     "num_outputs": 1, "activation": "relu"}, seed=0)
    with torch.no_grad():
        m.fc1.weight.fill_(w1)
        m.out.weight.fill_(w2)
    return m.eval()


def test_process_engine_gives_the_local_result():
    a, b = _spec_chain(1.0, 1.0), _spec_chain(4.0, 0.25)
    kw = dict(bead_train={"lr": 0.05, "max_steps": 300}, threads=1, seed=3, progress=False)
    loc = connect(a, b, (X, Y), "dss", 0.01, engine="local", **kw)
    proc = connect(a, b, (X, Y), "dss", 0.01, engine="process", workers=2, **kw)
    assert loc.summary["num_beads"] > 2
    assert len(loc.beads) == len(proc.beads)
    for p, q in zip(loc.beads, proc.beads):
        assert torch.equal(p, q)
    assert loc.table.equals(proc.table)
    assert loc.summary["normalized_length"] == proc.summary["normalized_length"]


# ----------------------------------------------------------------------------- BN, test error

def test_batchnorm_model_untouched_and_mode_restored():
    torch.manual_seed(0)
    spec = {"arch": "mlp", "widths": [6], "batchnorm": True, "input_shape": [1],
            "num_outputs": 1}
    a, b = build_model(spec, seed=1), build_model(spec, seed=2)
    a.train()
    b.eval()
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    r = connect(a, b, (X, Y), "dss", 1e3, progress=False)
    assert r.summary["connected"] == "yes" and r.summary["num_beads"] == 2
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb
    assert a.training and not b.training


def test_test_error_level_is_one_minus_test_accuracy():
    from deepscope import evaluate, load_dataset
    from deepscope.train import TrainConfig, train
    ds = load_dataset({"name": "gaussian-mixture", "n_train": 200, "n_test": 200, "dim": 4,
                       "num_classes": 3, "separation": 3.0})
    spec = {"arch": "mlp", "widths": [], "input_shape": [4], "num_outputs": 3}
    models = [train(build_model(spec, seed=s), ds,
                    TrainConfig(epochs=3, lr=0.1, batch_size=20, seed=s), progress=False).model
              for s in (0, 1)]
    errs = [1.0 - evaluate(m, ds, split="test")["acc"] for m in models]
    r = connect(models[0], models[1], ds, "linear", 0.5, level="test_error", progress=False)
    assert r.summary["level_a"] == pytest.approx(errs[0], abs=1e-12)
    assert r.summary["level_b"] == pytest.approx(errs[1], abs=1e-12)
    assert ((r.table["level"] - r.table["error"]).abs() < 1e-12).all()
    assert r.summary["connected"] == ("yes" if r.table["level"].max() <= 0.5 else "no")


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(method="walk"), "unknown method"),
    (dict(threshold=-1.0), "threshold"),
    (dict(threshold=None), "threshold"),
    (dict(level="accuracy"), "unknown level"),
    (dict(alpha=1.5), "alpha"),
    (dict(grid=1), "grid"),
    (dict(max_depth=-1), "max_depth"),
    (dict(bead_train={"steps": 3}), "unknown keys"),
    (dict(bead_train={"optimizer": "lbfgs"}), "optimizer"),
    (dict(engine="threads"), "unknown engine"),
    (dict(engine="process"), "architecture spec"),
    (dict(threshold=1e-6), "end point a"),
    (dict(level="test_error"), "test split"),
])
def test_bad_input_raises_config_error(kwargs, match):
    a, b = chain(1.0, 1.05), chain(4.0, 0.25)  # a: loss 0.0025·mean(x²) > 0
    args = dict(method="dss", threshold=0.01)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        connect(a, b, (X, Y), args.pop("method"), args.pop("threshold"), progress=False,
                **args)


def test_identical_or_mismatched_models_are_rejected():
    from deepscope import ShapeError
    with pytest.raises(ConfigError, match="identical"):
        connect(chain(1.0, 1.0), chain(1.0, 1.0), (X, Y), "dss", 0.01, progress=False)
    with pytest.raises(ShapeError):
        connect(chain(1.0, 1.0), nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 1)), (X, Y),
                "dss", 0.01, progress=False)
    with pytest.raises(ConfigError, match="data is required"):
        connect(chain(1.0, 1.0), chain(4.0, 0.25), None, "dss", 0.01, progress=False)


def test_plot_connection_draws_the_profiles_and_the_threshold():
    from deepscope.report.landscape_connect import plot_connection
    a, b = chain(1.0, 1.0), chain(4.0, 0.25)
    lin = connect(a, b, (X, Y), "linear", 0.01, grid=9, progress=False)
    dss = connect(a, b, (X, Y), "dss", 0.01, bead_train={"lr": 0.05}, progress=False)
    fig = plot_connection(dss, lin)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    dss_line = next(ln for lab, ln in lines.items() if lab.startswith("dss: yes"))
    np.testing.assert_allclose(dss_line.get_ydata(), dss.table["level"])
    np.testing.assert_allclose(dss_line.get_xdata(), dss.table["position"])
    assert any(lab.startswith("linear: no") for lab in lines)
    l0 = next(ln for lab, ln in lines.items() if lab.startswith("L0"))
    assert list(l0.get_ydata()) == [0.01, 0.01]
    assert ax.get_yscale() == "symlog"  # the straight line's barrier is > 20 L0


def test_a_failed_bead_next_to_an_inserted_one_keeps_a_full_profile():
    """Depth 1 has two failing segments; its first bead is inserted, the second fails: the
    result is "undetermined" and the profile still covers every segment of the path."""
    from deepscope.landscape.dss import find_connection
    from deepscope.landscape.evaluate import PointEvaluator
    a, b = chain(1.0, 1.0), chain(-1.0, -1.0)       # the segment crosses w = 0 (loss MX2)
    ev = PointEvaluator(a, (X, Y))
    calls = []

    def run_beads(payloads):
        calls.append(len(payloads))
        out = []
        for k, p in enumerate(payloads):
            if len(calls) == 1:   # depth 0 -> 1: a bead off the hyperbola, both halves fail
                theta = torch.tensor([0.0, 0.0])
                out.append({"id": p["id"], "status": "done", "theta": theta,
                            "level_final": 0.0, "loss_final": 0.0, "error_final": math.nan,
                            "steps": 1, "reached_alpha": True, "error": None})
            elif k == 0:          # depth 1 -> 2: the first bead is "trained" onto a's point
                out.append({"id": p["id"], "status": "done", "theta": ev.vector(a),
                            "level_final": 0.0, "loss_final": 0.0, "error_final": math.nan,
                            "steps": 1, "reached_alpha": True, "error": None})
            else:                 # ... the second cannot be trained into the level set
                out.append({"id": p["id"], "status": "done", "theta": p["theta"],
                            "level_final": 1.0, "loss_final": 1.0, "error_final": math.nan,
                            "steps": 1, "reached_alpha": False, "error": None})
        return out

    r = find_connection(ev, ev.vector(a), ev.vector(b), threshold=0.01, grid=5,
                        run_beads=run_beads, progress=False)
    assert calls == [1, 2]
    assert r["connected"] == "undetermined" and "could not be trained" in r["stop_reason"]
    assert len(r["beads"]) == 4 and len(r["segments"]) == 3   # a, inserted bead, bead 1, b
    for i, j, rows in r["segments"]:
        assert len(rows) == 5
        for row in rows[1:-1]:  # the end points carry the (stubbed) bead records
            theta = (1 - row["t"]) * r["beads"][r["bead_ids"].index(i)] \
                + row["t"] * r["beads"][r["bead_ids"].index(j)]
            assert row["loss"] == pytest.approx(chain_loss(theta), rel=1e-4, abs=1e-7)


# ----------------------------------------------------------------------------- frozen

def chain3(w2: float, w3: float, frozen: bool = True) -> nn.Module:
    """w3·w2·w1·x with w1 = 1 (frozen): the level sets in (w2, w3) are the chain's bands."""
    m = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False),
                      nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[1].weight.fill_(w2)
        m[2].weight.fill_(w3)
    m[0].weight.requires_grad_(not frozen)
    return m


@pytest.mark.parametrize("method", ["dss", "bezier"])
def test_frozen_parameters_stay_fixed_along_trained_paths(method):
    kw = dict(bead_train={"lr": 0.05, "max_steps": 400, "batch_size": 16}, progress=False)
    a, b = chain3(1.0, 1.0), chain3(4.0, 0.25)
    r = connect(a, b, (X, Y), method, 0.01, **kw)
    inner = r.beads[1:-1]
    assert inner, "expected trained beads / a bend"
    for theta in inner:
        assert float(theta[0]) == 1.0                      # w1 untouched
    assert any(float(t[1]) != float((1 - s) * 1.0 + s * 4.0)  # the others were trained
               for t, s in zip(inner, np.linspace(0, 1, len(inner) + 2)[1:-1]))
    assert a[0].weight.requires_grad is False                  # the model is untouched
    # without freezing, training moves w1 as well
    free = connect(chain3(1.0, 1.0, False), chain3(4.0, 0.25, False), (X, Y), method, 0.01,
                   **kw)
    assert any(float(t[0]) != 1.0 for t in free.beads[1:-1])


def _spec_chain3(w2, w3):
    m = build_model({"arch": "mlp", "widths": [1, 1], "bias": False, "input_shape": [1],
                     "num_outputs": 1, "activation": "relu"}, seed=0)
    with torch.no_grad():
        m.fc1.weight.fill_(1.0)
        m.fc2.weight.fill_(w2)
        m.out.weight.fill_(w3)
    return m.eval()


def test_frozen_parameters_reach_process_workers():
    a, b = _spec_chain3(1.0, 1.0), _spec_chain3(4.0, 0.25)
    a.fc1.weight.requires_grad_(False)  # frozen in one model: held fixed for the path
    kw = dict(bead_train={"lr": 0.05, "max_steps": 300}, threads=1, seed=3, progress=False)
    loc = connect(a, b, (X, Y), "dss", 0.01, engine="local", **kw)
    proc = connect(a, b, (X, Y), "dss", 0.01, engine="process", workers=2, **kw)
    assert len(loc.beads) == len(proc.beads) > 2
    for p, q in zip(loc.beads, proc.beads):
        assert torch.equal(p, q)
    names = [n for n, _ in a.named_parameters()]
    i = names.index("fc1.weight")
    for t in loc.beads[1:-1]:
        assert float(t[i]) == 1.0
