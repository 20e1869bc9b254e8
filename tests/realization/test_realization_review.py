"""Regression tests from the issue-6 review: non-finite shallow nets and bad devices raise
DeepscopeErrors (they used to surface as scipy's ValueError / torch's RuntimeError)."""
import pytest
import torch
from torch import nn

from deepscope.errors import ConfigError, ModelError
from deepscope.realization import realization
from deepscope.realization.shallow import ShallowReLU, as_shallow


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 1))


def test_non_finite_parameters_model_error():
    bad = _net()
    with torch.no_grad():
        bad[2].weight[0, 1] = float("nan")
    with pytest.raises(ModelError, match="non-finite .* in A"):
        as_shallow(bad)
    with pytest.raises(ModelError, match="non-finite"):
        realization(bad, _net(1))
    with pytest.raises(ModelError, match="in W, b"):
        ShallowReLU(torch.full((3, 2), float("inf")), torch.full((3,), float("nan")),
                    torch.zeros(1, 3), torch.zeros(1))


def test_bad_device_config_error():
    with pytest.raises(ConfigError, match="device"):
        realization(_net(), _net(1), device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            realization(_net(), _net(1), device="cuda")
    # a valid device still works
    assert realization(_net(), _net(), device="cpu").summary["param_distance"] < 1e-9
