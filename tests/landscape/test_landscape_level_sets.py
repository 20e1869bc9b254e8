"""The level-set study (Freeman & Bruna 2017) and its swapped-units counterexample."""

import pytest
import torch

from deepscope import ConfigError
from deepscope._params import state_fingerprint
from deepscope.experiments.level_sets import (COLUMNS, counterexample, counterexample_pair,
                                              level_set_study, swap_hidden_units)
from deepscope.landscape.connect import connect

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_swapped_copy_computes_the_same_function():
    model, swapped, (x, y) = counterexample_pair(n=64)
    f = state_fingerprint(model)
    with torch.no_grad():
        assert torch.allclose(swapped(x), model(x), atol=1e-6)
        assert torch.equal(model(x), y)  # the data are the model's own outputs: loss 0
    assert not torch.equal(swapped.fc1.weight, model.fc1.weight)
    assert torch.equal(swapped.fc1.weight[[1, 0, 2]], model.fc1.weight)
    assert torch.equal(swapped.out.weight[:, [1, 0, 2]], model.out.weight)
    again = swap_hidden_units(swapped, 0, 1)
    assert torch.equal(again.fc1.weight, model.fc1.weight)
    assert state_fingerprint(model) == f


def test_counterexample_is_not_connected():
    model, swapped, data = counterexample_pair()
    fa, fb = state_fingerprint(model), state_fingerprint(swapped)
    r = connect(model, swapped, data, "dss", 0.01, max_depth=2,
                bead_train={"lr": 0.01, "max_steps": 400}, progress=False)
    assert r.summary["connected"] != "yes"
    assert r.summary["connected"] == "undetermined"  # DSS never claims "no"
    assert r.summary["level_a"] == 0.0 and r.summary["level_b"] == 0.0
    # the straight segment's midpoint (two identical units) is far above the level
    lin = connect(model, swapped, data, "linear", 0.01, grid=21, progress=False)
    assert lin.summary["connected"] == "no"
    mid = lin.table[lin.table["t"] == 0.5]["level"].iloc[0]
    # reference: the midpoint network evaluated by hand
    x, y = data
    w1 = 0.5 * (model.fc1.weight + swapped.fc1.weight)
    w2 = 0.5 * (model.out.weight + swapped.out.weight)
    with torch.no_grad():
        ref = float(((torch.relu(x @ w1.T) @ w2.T - y) ** 2).mean())
    assert mid == pytest.approx(ref, rel=1e-5)
    assert mid > 10 * 0.01
    assert state_fingerprint(model) == fa and state_fingerprint(swapped) == fb


def test_counterexample_helper_reports_the_linear_verdict():
    r = counterexample(max_depth=0, progress=False)  # plumbing only: no bead trained
    assert r.summary["connected"] != "yes"
    assert r.settings["linear_verdict"] == "no"


def test_small_study_table_and_summary():
    torch.set_num_threads(2)  # the study runs on 1 thread (task default) and restores this
    r = level_set_study("quadratic", thresholds=[0.05, 0.1], pairs=1, epochs=40,
                        n_train=200, max_depth=3, bead_train={"max_steps": 300},
                        with_counterexample=False, progress=False)
    assert torch.get_num_threads() == 2 and r.settings["threads"] == 1
    assert list(r.table.columns) == list(COLUMNS)
    t = r.table
    assert set(t["threshold"]) <= {0.05, 0.1}
    reached = {float(k): v for k, v in r.summary["not_reached"].items()}
    for L0 in (0.05, 0.1):
        assert len(t[t["threshold"] == L0]) == (1 if not reached[L0] else 0)
    assert len(t) >= 1
    assert (t["level_a"] <= t["threshold"]).all() and (t["level_b"] <= t["threshold"]).all()
    assert (t["num_beads"] >= 2).all() and (t["normalized_length"] >= 1 - 1e-9).all()
    assert set(t["connected"]) <= {"yes", "undetermined"}
    yes = t[t["connected"] == "yes"]
    assert (yes["max_level"] <= yes["threshold"]).all()
    for row in r.summary["by_threshold"]:
        sub = yes[yes["threshold"] == row["threshold"]]
        assert row["connected_yes"] == len(sub)
        if len(sub):
            assert row["mean_length"] == pytest.approx(sub["normalized_length"].mean())
    assert r.settings["thresholds"] == [0.1, 0.05]
    from deepscope.report.landscape_connect import plot_level_sets
    fig = plot_level_sets(r)
    assert len(fig.axes) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="quartic"), "unknown task"),
    (dict(pairs=0), "pairs"),
    (dict(thresholds=[0.1, -1.0]), "thresholds"),
    (dict(alpha=0.0), "alpha"),
    (dict(max_depth=-2), "max_depth"),
    (dict(bead="min"), "unknown bead"),
    (dict(engine="threads"), "unknown engine"),
    (dict(level="test_error"), "regression"),
    (dict(level="accuracy"), "unknown level"),
])
def test_study_rejects_bad_options_before_training(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        level_set_study(progress=False, **kwargs)
