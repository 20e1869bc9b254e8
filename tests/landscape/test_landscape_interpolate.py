"""interpolate(): end points, barriers against a slow per-t reference, BatchNorm handling."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepscope
from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ModelError
from deepscope.landscape.interpolate import barrier, interpolate
from deepscope.nets import build_model


@pytest.fixture(scope="module")
def digits():
    return deepscope.load_dataset("digits", n_train=300, n_test=150)


@pytest.fixture(scope="module")
def two_mlps(digits):
    """Two MLPs trained briefly from different seeds (so the segment has a real barrier)."""
    out = []
    for seed in (0, 1):
        m = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10,
                         "widths": [24]}, seed=seed)
        res = deepscope.train(m, digits, deepscope.TrainConfig(
            optimizer="sgd", lr=0.1, momentum=0.9, epochs=4, batch_size=32, seed=seed),
            progress=False)
        out.append(res.model.eval())
    return out


@pytest.fixture(scope="module")
def digits2d():
    return deepscope.load_dataset("digits", n_train=300, n_test=150, flat=False)


@pytest.fixture(scope="module")
def two_resnets(digits2d):
    """Two small ResNets with BatchNorm, trained briefly (running stats not the defaults)."""
    out = []
    for seed in (0, 1):
        m = build_model({"arch": "resnet", "input_shape": [1, 8, 8], "num_outputs": 10,
                         "width": 4, "blocks": [1, 1], "batchnorm": True}, seed=seed)
        res = deepscope.train(m, digits2d, deepscope.TrainConfig(
            optimizer="sgd", lr=0.1, momentum=0.9, epochs=3, batch_size=32, seed=seed),
            progress=False)
        out.append(res.model.eval())
    return out


def _slow_curve(a, b, x, y, ts, buffers="a"):
    """Per t: a fresh copy with the interpolated parameters (and a's buffers, or the
    interpolated ones with buffers='interp'); full-batch loss and accuracy."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    losses, accs = [], []
    for t in ts:
        m = copy.deepcopy(a)
        state = m.state_dict()
        for k in pa:
            state[k] = (1 - t) * pa[k].detach() + t * pb[k].detach()
        if buffers == "interp":
            for k in ba:
                if ba[k].is_floating_point():
                    state[k] = (1 - t) * ba[k] + t * bb[k]
        m.load_state_dict(state)
        m.eval()
        with torch.no_grad():
            out = m(x)
        losses.append(F.cross_entropy(out, y).item())
        accs.append((out.argmax(1) == y).double().mean().item())
    return np.array(losses), np.array(accs)


def _slow_barrier(v, ts):
    best, where = -math.inf, None
    for i, t in enumerate(ts):
        gap = v[i] - ((1 - t) * v[0] + t * v[-1])
        if gap > best:
            best, where = gap, t
    return best, where


def test_barrier_closed_form():
    t = np.linspace(0, 1, 11)
    b, where = barrier(t * (1 - t) + 2 * t + 1, t)   # chord 1 + 2t, excess t(1-t)
    assert b == pytest.approx(0.25, abs=1e-12) and where == pytest.approx(0.5)
    b, _ = barrier(t ** 2, t)                         # convex: never above the chord
    assert b == pytest.approx(0.0, abs=1e-12)
    # a non-finite end loss leaves no chord: NaN, not an all-NaN argmax error
    v = t ** 2
    v[-1] = np.nan
    assert all(np.isnan(barrier(v, t)))
    v = t ** 2
    v[0] = np.inf
    assert all(np.isnan(barrier(v, t)))
    # an interior NaN is skipped
    v = t * (1 - t)
    v[3] = np.nan
    assert barrier(v, t)[0] == pytest.approx(0.25, abs=1e-12)


def test_end_points_equal_the_models_own_losses(two_mlps, digits):
    a, b = two_mlps
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    res = interpolate(a, b, digits, steps=5, progress=False)
    assert list(res.table["t"]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    for split in ("train", "test"):
        for row, m in ((0, a), (-1, b)):
            ref = deepscope.evaluate(m, digits, split=split)
            assert res.table[f"{split}_loss"].iloc[row] == pytest.approx(ref["loss"], rel=1e-6)
            assert res.table[f"{split}_accuracy"].iloc[row] == pytest.approx(ref["acc"])
            assert res.table[f"{split}_error"].iloc[row] == pytest.approx(1 - ref["acc"])
        assert res.summary[f"{split}_loss_a"] == pytest.approx(
            deepscope.evaluate(a, digits, split=split)["loss"], rel=1e-6)
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb


def test_matches_slow_per_t_reference(two_mlps, digits):
    a, b = two_mlps
    steps = 9
    res = interpolate(a, b, digits, steps=steps, progress=False)
    ts = np.linspace(0, 1, steps)
    for split in ("train", "test"):
        x, y = digits.split(split)
        loss, acc = _slow_curve(a, b, x, y, ts)
        np.testing.assert_allclose(res.curve(split, "loss"), loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.curve(split, "accuracy"), acc, atol=1e-12)
        np.testing.assert_allclose(res.curve(split, "loss_linear"),
                                   (1 - ts) * loss[0] + ts * loss[-1], rtol=1e-5, atol=1e-6)
        bl, tl = _slow_barrier(loss, ts)
        be, te = _slow_barrier(1 - acc, ts)
        assert res.barrier(split, "loss") == pytest.approx(bl, rel=1e-5, abs=1e-6)
        assert res.summary[f"barrier_{split}_loss_t"] == pytest.approx(tl)
        assert res.barrier(split, "error") == pytest.approx(be, abs=1e-12)
        assert res.summary[f"barrier_{split}_error_t"] == pytest.approx(te)
    assert res.barrier("train", "loss") > 0.01  # independently trained nets: a real bump
    dist = math.sqrt(sum(((p - q) ** 2).sum().item()
                         for p, q in zip(a.parameters(), b.parameters())))
    assert res.summary["distance"] == pytest.approx(dist, rel=1e-5)


def test_barrier_of_a_model_with_itself_is_zero(two_mlps, digits):
    a = two_mlps[0]
    res = interpolate(a, copy.deepcopy(a), digits, steps=6, progress=False)
    for split in ("train", "test"):
        assert res.barrier(split, "loss") == pytest.approx(0.0, abs=1e-7)
        assert res.barrier(split, "error") == pytest.approx(0.0, abs=1e-12)
        v = res.curve(split, "loss")
        assert np.ptp(v) < 1e-6


def test_bn_recompute_matches_manual_and_differs_from_keep(two_resnets, digits2d):
    a, b = two_resnets
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    x, y = digits2d.split("train")
    rec = interpolate(a, b, (x, y), steps=3, batch_size=4096, progress=False)
    keep = interpolate(a, b, (x, y), steps=3, bn="keep", progress=False)
    assert rec.summary["bn"] == "recompute" and keep.summary["bn"] == "keep"
    # manual recomputation at t = 0.5: interpolated parameters, one full-batch pass in
    # train mode with momentum 1 (running stats := batch statistics), then eval
    m = copy.deepcopy(a)
    state = m.state_dict()
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for k in pa:
        state[k] = 0.5 * pa[k].detach() + 0.5 * pb[k].detach()
    m.load_state_dict(state)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = 1.0
    m.train()
    with torch.no_grad():
        m(x)
        m.eval()
        ref = F.cross_entropy(m(x), y).item()
    assert rec.table["train_loss"].iloc[1] == pytest.approx(ref, rel=1e-5)
    # keep: buffers interpolated linearly, matches the slow reference exactly that way
    kl, _ = _slow_curve(a, b, x, y, [0.0, 0.5, 1.0], buffers="interp")
    np.testing.assert_allclose(keep.curve("train", "loss"), kl, rtol=1e-5)
    # end points of keep are the models themselves
    assert keep.summary["train_loss_a"] == pytest.approx(
        deepscope.evaluate(a, (x, y))["loss"], rel=1e-6)
    # the naive curve is wrong in the middle
    assert abs(keep.table["train_loss"].iloc[1] - ref) > 0.05 * ref
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb


def test_regression_has_loss_columns_only():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = torch.randn(64, 2)
    spec = {"arch": "mlp", "input_shape": [5], "num_outputs": 2, "widths": [8]}
    a, b = build_model(spec, seed=0).eval(), build_model(spec, seed=1).eval()
    res = interpolate(a, b, {"train": (x, y)}, steps=4, progress=False)
    assert list(res.table.columns) == ["t", "train_loss", "train_accuracy",
                                       "train_loss_linear"]
    assert res.table["train_accuracy"].isna().all()
    assert "barrier_train_error" not in res.summary
    ts = np.linspace(0, 1, 4)
    ref = []
    for t in ts:
        m = copy.deepcopy(a)
        torch.nn.utils.vector_to_parameters(
            (1 - t) * torch.nn.utils.parameters_to_vector(a.parameters())
            + t * torch.nn.utils.parameters_to_vector(b.parameters()), m.parameters())
        with torch.no_grad():
            ref.append(F.mse_loss(m(x), y).item())
    np.testing.assert_allclose(res.curve("train", "loss"), ref, rtol=1e-5)
    assert res.barrier("train") == pytest.approx(_slow_barrier(np.array(ref), ts)[0],
                                                 rel=1e-5, abs=1e-7)


def test_checkpoints_use_their_dataset(tmp_path):
    paths = []
    for seed in (0, 1):
        p = tmp_path / f"m{seed}.safetensors"
        deepscope.train_and_save({"arch": "mlp", "widths": [8]},
                                 {"name": "digits", "n_train": 100, "n_test": 50},
                                 {"epochs": 1, "batch_size": 50, "seed": seed}, p,
                                 progress=False)
        paths.append(p)
    res = interpolate(str(paths[0]), paths[1], steps=3, progress=False)
    ck = deepscope.load(paths[0])
    ref = deepscope.evaluate(ck.model, ck.dataset(), split="test")
    assert res.table["test_loss"].iloc[0] == pytest.approx(ref["loss"], rel=1e-6)
    assert res.summary["num_samples"] == {"train": 100, "test": 50}
    assert res.settings["a"] == str(paths[0])


def test_bad_inputs(two_mlps, digits):
    a, b = two_mlps
    with pytest.raises(ConfigError, match="steps"):
        interpolate(a, b, digits, steps=1, progress=False)
    with pytest.raises(ConfigError, match="bn"):
        interpolate(a, b, digits, bn="average", progress=False)
    with pytest.raises(ConfigError, match="data is required"):
        interpolate(a, b, progress=False)
    other = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10,
                         "widths": [12]}, seed=0)
    with pytest.raises(ModelError, match="different architectures"):
        interpolate(a, other, digits, progress=False)
    with pytest.raises(ConfigError, match="nn.Module or a checkpoint path"):
        interpolate(a, 3, digits, progress=False)
