"""Regression tests from the issue-6 review: non-finite NTK entries and bad devices raise
DeepscopeErrors (they used to surface as a LinAlgError / RuntimeError traceback)."""
import pytest
import torch
from torch import nn

from deepscope.cli import main
from deepscope.dynamics.ntk import ntk
from deepscope.errors import ConfigError, ModelError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


def test_ntk_nan_weights_model_error():
    net = _net()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    for method in ("jacobian", "ntk-vp"):
        with pytest.raises(ModelError, match="non-finite parameters in 0.weight"):
            ntk(net, torch.randn(5, 4), method=method)


def test_ntk_bad_device_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="device"):
        ntk(_net(), torch.randn(5, 4), device="nonsense")
    from deepscope.workflows import train_and_save
    path = tmp_path / "m.safetensors"
    train_and_save({"arch": "mlp", "widths": [4]}, {"name": "digits", "n_train": 40},
                   {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 20, "seed": 0},
                   path, progress=False)
    assert main(["ntk", str(path), "--device", "nonsense", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepscope: error:") and "device" in err[0]
