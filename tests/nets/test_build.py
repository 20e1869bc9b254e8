"""Building models: output shapes, determinism, the attached spec, parameter counts."""
import json

import pytest
import torch
from torch import nn

from deepscope._params import functional_forward, params_of
from deepscope.errors import ConfigError, ShapeError
from deepscope.nets import ARCHITECTURES, build_model, complete_arch_spec, count_parameters

SHAPES = [(64,), (1, 8, 8), (1, 40), (3, 32, 32)]

# Small versions of each architecture, so the grid below stays fast.
SMALL = {
    "mlp": {"widths": [16, 8]},
    "cnn": {"width": 0.05},
    "resnet": {"blocks": [1, 1], "width": 4},
    "lstm": {"hidden": 8},
}


def spec_for(arch, shape, k=3, **kw):
    return {"arch": arch, "input_shape": list(shape), "num_outputs": k, **SMALL[arch], **kw}


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shape(arch, shape):
    model = build_model(spec_for(arch, shape, k=5), seed=0)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 5) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.training


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_spec_builds(arch):
    model = build_model({"arch": arch, "input_shape": [1, 8, 8], "num_outputs": 10}, seed=0)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("init", ["default", "he", "glorot", "orthogonal"])
def test_seed_determinism(arch, init):
    spec = spec_for(arch, (1, 8, 8), init=init)
    a, b = build_model(spec, seed=7), build_model(spec, seed=7)
    assert same_state(a, b)
    c = build_model(spec, seed=8)
    assert not same_state(a, c)


def test_seed_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(spec_for("mlp", (64,)), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_no_seed_uses_global_rng():
    spec = spec_for("mlp", (64,))
    torch.manual_seed(5)
    a = build_model(spec)
    torch.manual_seed(5)
    b = build_model(spec)
    assert same_state(a, b)
    assert not same_state(a, build_model(spec))


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(ConfigError, match="seed"):
        build_model(spec_for("mlp", (64,)), seed=seed)


def test_spec_attached():
    spec = spec_for("cnn", (1, 40))
    model = build_model(spec, seed=0)
    assert isinstance(model.deepscope_spec, dict)
    assert model.deepscope_spec == complete_arch_spec(spec)
    json.dumps(model.deepscope_spec)
    assert "deepscope_spec" not in model.state_dict()


def test_build_validates():
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model({"arch": "transformer", "input_shape": [4], "num_outputs": 2})


def test_regression_outputs():
    model = build_model(spec_for("mlp", (5,), k=2), seed=0)
    assert model(torch.randn(7, 5)).shape == (7, 2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_wrong_input_shape(arch):
    model = build_model(spec_for(arch, (1, 8, 8)), seed=0)
    with pytest.raises(ShapeError, match=r"\(N, 1, 8, 8\).*\(4, 1, 8, 9\)"):
        model(torch.randn(4, 1, 8, 9))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_functional_call_matches_forward(arch):
    model = build_model(spec_for(arch, (1, 40)), seed=0).eval()
    x = torch.randn(3, 1, 40)
    out = functional_forward(model, params_of(model), x)
    assert torch.allclose(out, model(x))


def test_mlp_parameter_count_by_hand():
    spec = {"arch": "mlp", "input_shape": [1, 8, 8], "num_outputs": 10, "widths": [32, 16]}
    model = build_model(spec, seed=0)
    by_hand = (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
    assert count_parameters(model) == by_hand
    no_bias = build_model({**spec, "bias": False}, seed=0)
    assert count_parameters(no_bias) == 64 * 32 + 32 * 16 + 16 * 10
    with_bn = build_model({**spec, "batchnorm": True}, seed=0)
    assert count_parameters(with_bn) == by_hand + 2 * (32 + 16)


def test_lstm_parameter_count_by_hand():
    spec = {"arch": "lstm", "input_shape": [2, 10], "num_outputs": 3, "hidden": 5}
    lstm = 4 * (5 * 2 + 5 * 5 + 2 * 5)
    assert count_parameters(build_model(spec, seed=0)) == lstm + 5 * 3 + 3


def test_count_parameters_trainable_only():
    model = build_model(spec_for("mlp", (4,)), seed=0)
    total = count_parameters(model)
    model.out.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model.out.weight.numel()
    assert count_parameters(model) == total
    assert count_parameters(nn.Sequential()) == 0
