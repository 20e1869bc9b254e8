"""Layer activations: defaults for the built-in nets, selection, equality with a manual
forward pass, and the model left untouched."""
import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ModelError
from deepscope.nets import build_model
from deepscope.representations.activations import (capture_activations, default_layers,
                                                   resolve_layers)


def names(refs):
    return [r.name for r in refs]


def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_mlp_defaults_match_manual_forward():
    model = build_model({"arch": "mlp", "input_shape": [1, 4, 4], "num_outputs": 3,
                         "widths": [8, 6], "dropout": 0.3, "batchnorm": True}, seed=0)
    model.train()
    x = torch.randn(21, 1, 4, 4)
    before = state_fingerprint(model)
    acts = capture_activations(model, x, batch_size=5, include_input=True)
    assert state_fingerprint(model) == before and model.training and no_hooks(model)
    assert list(acts) == ["input", "act1", "act2", "out"]
    model.eval()
    with torch.no_grad():
        h1 = model.act1(model.bn1(model.fc1(x.flatten(1))))
        h2 = model.act2(model.bn2(model.fc2(h1)))
        out = model(x)
    model.train()
    torch.testing.assert_close(acts["input"], x.flatten(1), rtol=0, atol=0)
    torch.testing.assert_close(acts["act1"], h1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(acts["act2"], h2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(acts["out"], out, rtol=1e-6, atol=1e-6)
    assert not acts["out"].requires_grad


def test_cnn_defaults_match_manual_forward():
    model = build_model({"arch": "cnn", "input_shape": [1, 8, 8], "num_outputs": 4,
                         "width": 0.05}, seed=0)
    assert names(default_layers(model)) == ["features.pool1", "features.pool2",
                                            "classifier.act1", "classifier.act2",
                                            "classifier.out"]
    x = torch.randn(9, 1, 8, 8)
    acts = capture_activations(model, x)
    with torch.no_grad():
        f = model.features
        p1 = f.pool1(f.act1(f.conv1(x)))
        p2 = f.pool2(f.act2(f.conv2(p1)))
        c = model.classifier
        a1 = c.act1(c.fc1(c.flatten(p2)))
        a2 = c.act2(c.fc2(a1))
    torch.testing.assert_close(acts["features.pool1"], p1.flatten(1))
    torch.testing.assert_close(acts["features.pool2"], p2.flatten(1))
    torch.testing.assert_close(acts["classifier.act2"], a2)
    torch.testing.assert_close(acts["classifier.out"], model(x).detach())
    bn = build_model({"arch": "cnn", "input_shape": [1, 8, 8], "num_outputs": 4,
                      "width": 0.05, "batchnorm": True}, seed=0)
    assert names(default_layers(bn))[:2] == ["features.bn1", "features.bn2"]


def test_resnet_defaults():
    model = build_model({"arch": "resnet", "input_shape": [1, 8, 8], "num_outputs": 3,
                         "blocks": [1, 1], "width": 4}, seed=0)
    assert names(default_layers(model)) == ["stem", "stages.0.0", "stages.1.0", "pool", "head"]
    x = torch.randn(6, 1, 8, 8)
    before = state_fingerprint(model)
    acts = capture_activations(model, x)
    assert state_fingerprint(model) == before
    model.eval()
    with torch.no_grad():
        s = model.stem(x)
        b0 = model.stages[0](s)
        ref = model(x)
    model.train()
    assert acts["stem"].shape == (6, 4 * 8 * 8) and acts["pool"].shape == (6, 8)
    torch.testing.assert_close(acts["stages.0.0"], b0.flatten(1))
    torch.testing.assert_close(acts["head"], ref)


def test_lstm_defaults_read_the_last_step():
    model = build_model({"arch": "lstm", "input_shape": [2, 5], "num_outputs": 3,
                         "hidden": 7}, seed=0)
    assert names(default_layers(model)) == ["head:input", "head"]
    x = torch.randn(4, 2, 5)
    acts = capture_activations(model, x, layers=["lstm", "head:input", "head"])
    with torch.no_grad():
        seq, _ = model.lstm(model.as_sequence(x))
    torch.testing.assert_close(acts["lstm"], seq.flatten(1))          # tuple -> first tensor
    torch.testing.assert_close(acts["head:input"], seq[:, -1, :])
    torch.testing.assert_close(acts["head"], model(x).detach())


def test_generic_model_defaults_and_selection():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(5, 2))
    assert names(default_layers(model)) == ["1", "2", "4"]
    assert names(resolve_layers(model, "leaves")) == ["0", "1", "2", "3", "4"]
    assert names(resolve_layers(model, "children")) == ["0", "1", "2", "3", "4"]
    assert names(resolve_layers(model, "Linear")) == ["1", "4"]
    assert names(resolve_layers(model, nn.ReLU)) == ["2"]
    assert names(resolve_layers(model, ["re:^[34]$", "1:input", "1"])) == ["1:input", "1",
                                                                           "3", "4"]
    assert names(resolve_layers(model, "output")) == ["output"]
    x = torch.randn(3, 2, 3)
    acts = capture_activations(model, x, ["1:input", "output"])
    torch.testing.assert_close(acts["1:input"], x.flatten(1))
    assert model.training
    torch.testing.assert_close(acts["output"], model.eval()(x).detach())  # eval: no dropout
    leaf = nn.Linear(3, 2)
    assert names(default_layers(leaf)) == ["output"]


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_containers_expanded_and_uncalled_modules():
    model = Holder()
    assert names(default_layers(model)) == ["blocks.0", "blocks.1", "unused"]
    acts = capture_activations(model, torch.randn(4, 3))  # a default that never runs: dropped
    assert list(acts) == ["blocks.0", "blocks.1"]
    with pytest.raises(ModelError, match="unused"):
        capture_activations(model, torch.randn(4, 3), layers=["unused"])
    assert no_hooks(model)


def test_bad_selection_and_inputs():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="matched no module"):
        resolve_layers(model, ["fc9"])
    with pytest.raises(ConfigError, match="invalid regex"):
        resolve_layers(model, "re:(")
    with pytest.raises(ConfigError):
        resolve_layers(model, [3.5])
    with pytest.raises(ConfigError):
        resolve_layers(model, [])
    with pytest.raises(ConfigError):
        capture_activations(model, torch.randn(2, 3), batch_size=0)
    with pytest.raises(ConfigError):
        capture_activations("model", torch.randn(2, 3))


def test_numpy_inputs_and_float64_model():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    acts = capture_activations(model, x)
    assert acts["0"].dtype == torch.float64
    torch.testing.assert_close(acts["0"], model(torch.tensor(x, dtype=torch.float64)).detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_private_copy():
    model = nn.Sequential(nn.Linear(3, 2))
    before = state_fingerprint(model)
    acts = capture_activations(model, torch.randn(4, 3), device="cuda")
    assert acts["0"].device.type == "cuda"
    assert state_fingerprint(model) == before and next(model.parameters()).device.type == "cpu"
