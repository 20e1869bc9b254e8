"""Initialization schemes give the documented weight statistics."""
import math

import pytest
import torch
from torch import nn

from deepscope.errors import ConfigError
from deepscope.nets import build_model, initialize


def mlp(init, d_in=512, widths=(512,), k=10, **kw):
    spec = {"arch": "mlp", "input_shape": [d_in], "num_outputs": k, "widths": list(widths),
            "init": init, **kw}
    return build_model(spec, seed=0)


def rel_err(a, b):
    return abs(a - b) / b


def test_he_std():
    w = mlp("he").fc1.weight
    assert rel_err(w.std().item(), math.sqrt(2 / 512)) < 0.1
    assert abs(w.mean().item()) < 0.02 * math.sqrt(2 / 512)
    # fan_in, not fan_out
    w = mlp("he", d_in=512, widths=(128,)).fc1.weight
    assert rel_err(w.std().item(), math.sqrt(2 / 512)) < 0.1


def test_he_conv_uses_receptive_field_fan_in():
    spec = {"arch": "cnn", "input_shape": [3, 8, 8], "num_outputs": 2, "channels": [64, 64],
            "fc": [8, 8], "init": "he"}
    w = build_model(spec, seed=0).features.conv2.weight
    assert w.shape == (64, 64, 5, 5)
    assert rel_err(w.std().item(), math.sqrt(2 / (64 * 25))) < 0.1


def test_glorot_std():
    w = mlp("glorot").fc1.weight
    assert rel_err(w.std().item(), math.sqrt(2 / (512 + 512))) < 0.1
    w = mlp("glorot", d_in=512, widths=(256,)).fc1.weight
    assert rel_err(w.std().item(), math.sqrt(2 / (512 + 256))) < 0.1


def test_orthogonal():
    w = mlp("orthogonal").fc1.weight.double()
    assert torch.allclose(w @ w.T, torch.eye(512, dtype=torch.float64), atol=1e-4)
    wide = mlp("orthogonal", d_in=512, widths=(64,)).fc1.weight.double()  # 64 x 512
    assert torch.allclose(wide @ wide.T, torch.eye(64, dtype=torch.float64), atol=1e-4)
    tall = mlp("orthogonal", d_in=16, widths=(64,)).fc1.weight.double()  # 64 x 16
    assert torch.allclose(tall.T @ tall, torch.eye(16, dtype=torch.float64), atol=1e-4)


def test_orthogonal_lstm_recurrent_weights():
    spec = {"arch": "lstm", "input_shape": [3, 10], "num_outputs": 2, "hidden": 16,
            "init": "orthogonal"}
    w = build_model(spec, seed=0).lstm.weight_hh_l0.double()  # 64 x 16
    assert torch.allclose(w.T @ w, torch.eye(16, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("init", ["he", "glorot", "orthogonal"])
@pytest.mark.parametrize("spec", [
    {"arch": "mlp", "input_shape": [8], "widths": [16], "batchnorm": True},
    {"arch": "cnn", "input_shape": [1, 8, 8], "width": 0.05, "batchnorm": True},
    {"arch": "resnet", "input_shape": [1, 8, 8], "blocks": [1, 1], "width": 4,
     "batchnorm": False},
    {"arch": "lstm", "input_shape": [1, 12], "hidden": 8, "layers": 2, "bidirectional": True},
], ids=lambda s: s["arch"])
def test_biases_zero_and_norms_identity(init, spec):
    model = build_model({**spec, "num_outputs": 3, "init": init}, seed=0)
    n_bias = 0
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("bias"):
            assert torch.all(p == 0), name
            n_bias += 1
        elif p.dim() >= 2:
            assert p.std() > 0, name
    assert n_bias > 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_resnet_batchnorm_init():
    spec = {"arch": "resnet", "input_shape": [3, 8, 8], "num_outputs": 2, "blocks": [1],
            "width": 4, "init": "he"}
    model = build_model(spec, seed=0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_default_is_pytorch_init():
    model = mlp("default", d_in=100, widths=(50,))
    bound = 1 / math.sqrt(100)
    w, b = model.fc1.weight, model.fc1.bias
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert b.abs().max() > 0  # PyTorch draws biases too
    # uniform(-bound, bound) has std bound / sqrt(3)
    assert rel_err(w.std().item(), bound / math.sqrt(3)) < 0.1


def test_initialize_unknown_scheme():
    with pytest.raises(ConfigError, match="unknown init 'lecun'"):
        initialize(nn.Linear(2, 2), "lecun")
