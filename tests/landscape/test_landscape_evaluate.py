"""PointEvaluator: loss/accuracy at parameter vectors, BN re-estimation, model untouched."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepscope
from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ShapeError
from deepscope.landscape.evaluate import PointEvaluator
from deepscope.nets import build_model


@pytest.fixture(scope="module")
def digits():
    return deepscope.load_dataset("digits", n_train=300, n_test=200)


def _resnet(d, seed=0):
    return build_model({"arch": "resnet", "input_shape": list(d.input_shape),
                        "num_outputs": d.num_outputs}, seed=seed)


def test_vector_round_trip_and_own_loss(digits):
    m = build_model({"arch": "mlp", "input_shape": list(digits.input_shape),
                     "num_outputs": 10, "widths": [32]}, seed=1)
    fp = state_fingerprint(m)
    ev = PointEvaluator(m, digits)
    v = ev.vector(m)
    assert v.numel() == sum(p.numel() for p in m.parameters())
    got = ev.evaluate(v)
    for split in ("train", "test"):
        ref = deepscope.evaluate(m, digits, split=split)
        assert got[f"{split}_loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert got[f"{split}_accuracy"] == pytest.approx(ref["acc"])
    # another point: equals a copy of the model with those parameters
    w = v * 0.7 + 0.01
    other = copy.deepcopy(m)
    torch.nn.utils.vector_to_parameters(w, other.parameters())
    ref = deepscope.evaluate(other, digits, split="train")
    assert ev.loss_at(w) == pytest.approx(ref["loss"], rel=1e-6)
    assert state_fingerprint(m) == fp


def test_bn_recompute_matches_manual_estimate(digits):
    m = _resnet(digits)
    fp = state_fingerprint(m)
    ev = PointEvaluator(m, digits)
    assert ev.bn == "recompute"
    theta = ev.vector(m) * 1.3
    got = ev.evaluate(theta, "train")
    # manual: load theta, one full-batch pass in train mode (BN stats = batch mean / var)
    ref = copy.deepcopy(m)
    torch.nn.utils.vector_to_parameters(theta, ref.parameters())
    x, y = digits.split("train")
    for mod in ref.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    ref.train()
    with torch.no_grad():
        ref(x)
        ref.eval()
        loss = F.cross_entropy(ref(x), y).item()
    assert got["train_loss"] == pytest.approx(loss, rel=1e-5)
    keep = PointEvaluator(m, digits, bn="keep").evaluate(theta, "train")["train_loss"]
    assert abs(keep - loss) > 1e-4  # stale statistics give a different loss
    assert state_fingerprint(m) == fp


def test_tuple_and_dict_data_and_errors(digits):
    m = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10, "widths": [8]},
                    seed=0)
    x, y = digits.split("train")
    ev = PointEvaluator(m, (x, y), max_samples=100)
    assert set(ev.splits) == {"train"} and ev.splits["train"][0].shape[0] == 100
    ev2 = PointEvaluator(m, {"train": (x, y), "val": digits.split("test")})
    assert set(ev2.evaluate(ev2.vector(m))) == {"train_loss", "train_accuracy", "val_loss",
                                                "val_accuracy"}
    with pytest.raises(ShapeError, match="length"):
        ev.evaluate(torch.zeros(3))
    with pytest.raises(ConfigError, match="split"):
        ev.evaluate(ev.vector(m), "test")
    with pytest.raises(ConfigError, match="bn"):
        PointEvaluator(m, (x, y), bn="fancy")
    with pytest.raises(ConfigError):
        PointEvaluator(m, [1, 2, 3])
    other = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10,
                         "widths": [9]}, seed=0)
    with pytest.raises(ShapeError, match="expected shape"):
        ev.vector(other)


def test_explicit_bn_inputs(digits):
    m = _resnet(digits)
    x, _ = digits.split("train")
    a = PointEvaluator(m, digits, bn_samples=100, seed=3)
    b = PointEvaluator(m, digits, bn_inputs=a.bn_inputs)
    assert torch.equal(a.bn_inputs, b.bn_inputs) and b.bn_inputs.shape[0] == 100
    theta = a.vector(m) * 0.9
    assert a.evaluate(theta) == b.evaluate(theta)
    with pytest.raises(ShapeError, match="bn_inputs"):
        PointEvaluator(m, digits, bn_inputs=torch.zeros(4, 3))
