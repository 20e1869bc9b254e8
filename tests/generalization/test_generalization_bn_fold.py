"""BatchNorm folding: the folded network computes the original eval-mode function."""
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ModelError
from deepscope.generalization.bn_fold import BiasMapConv, fold_batchnorm, layer_matrices
from deepscope.nets import build_model, complete_arch_spec

CNN = {"arch": "cnn", "input_shape": [1, 8, 8], "num_outputs": 10, "channels": [4, 6],
       "fc": [16, 12], "batchnorm": True}
CNN1D = {**CNN, "input_shape": [1, 40]}
RESNET = {"arch": "resnet", "input_shape": [1, 8, 8], "num_outputs": 10, "blocks": [1, 1],
          "width": 4}
MLP = {"arch": "mlp", "input_shape": [12], "num_outputs": 3, "widths": [7, 5],
       "batchnorm": True}


def _model(spec, dtype=torch.float32):
    """Built model with non-trivial BatchNorm parameters and running statistics."""
    m = build_model(complete_arch_spec(spec), seed=0).to(dtype)
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            shape = mod.weight.shape
            mod.weight.data = (torch.rand(shape, generator=g) * 2 - 0.5).to(dtype)  # some < 0
            mod.bias.data = torch.randn(shape, generator=g).to(dtype)
            mod.running_mean = torch.randn(shape, generator=g).to(dtype)
            mod.running_var = (torch.rand(shape, generator=g) + 0.2).to(dtype)
    return m


@pytest.mark.parametrize("spec", [CNN, CNN1D, RESNET, MLP], ids=["cnn", "cnn1d", "resnet", "mlp"])
def test_folded_function_equals_original_in_eval_mode(spec):
    m = _model(spec)
    m.train()  # the user's mode must come back unchanged
    fp = state_fingerprint(m)
    x = torch.randn(16, *spec["input_shape"], generator=torch.Generator().manual_seed(2))
    f = fold_batchnorm(m, x)
    assert state_fingerprint(m) == fp and m.training
    n_bn = sum(isinstance(q, nn.modules.batchnorm._BatchNorm) for q in m.modules())
    assert len(f.folds) == n_bn > 0
    assert not any(isinstance(q, nn.modules.batchnorm._BatchNorm) for q in f.model.modules())
    x_new = torch.randn(9, *spec["input_shape"], generator=torch.Generator().manual_seed(3))
    m.eval()
    with torch.no_grad():
        ref, got = m(x_new), f.model(x_new)
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("spec", [CNN, RESNET], ids=["cnn", "resnet"])
def test_fold_is_exact_in_float64(spec):
    m = _model(spec, torch.float64).eval()
    x = torch.randn(8, *spec["input_shape"], dtype=torch.float64)
    f = fold_batchnorm(m, x)
    with torch.no_grad():
        assert torch.allclose(f.model(x), m(x), rtol=0, atol=1e-11)


def test_cnn_batchnorm_after_pooling_folds_into_next_layer_with_bias_map():
    m = _model(CNN).eval()
    f = fold_batchnorm(m, torch.randn(4, 1, 8, 8))
    assert ("features.bn1", "features.conv2", "following") in f.folds
    assert ("features.bn2", "classifier.fc1", "following") in f.folds
    conv2 = f.model.features.conv2
    # zero padding: the shift of bn1 does not reach the padded border, so the bias varies
    assert isinstance(conv2, BiasMapConv)
    bm = conv2.bias_map
    assert bm.shape == (6, 4, 4) and not torch.allclose(bm[:, 0, 0], bm[:, 1, 1])
    # folded weights: conv2 input channels scaled by a = γ / sqrt(var + eps)
    bn1 = m.features.bn1
    a = bn1.weight / torch.sqrt(bn1.running_var + bn1.eps)
    ref = m.features.conv2.weight * a[None, :, None, None]
    assert torch.allclose(f.weights["features.conv2"], ref, atol=1e-6)


def test_preceding_fold_matches_formula_for_mlp():
    m = _model(MLP).eval()
    f = fold_batchnorm(m, torch.randn(5, 12))
    bn, fc = m.bn1, m.fc1
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = a[:, None] * fc.weight
    b = a * (fc.bias - bn.running_mean) + bn.bias
    assert torch.allclose(f.weights["fc1"], w, atol=1e-6)
    assert torch.allclose(f.model.fc1.bias, b, atol=1e-6)
    assert torch.equal(f.weights["out"], m.out.weight)  # no BatchNorm next to it
    mats = layer_matrices(f.weights)
    assert [tuple(v.shape) for v in mats.values()] == [(7, 12), (5, 7), (3, 5)]


def test_resnet_without_batchnorm_is_unchanged():
    m = build_model(complete_arch_spec({**RESNET, "batchnorm": False}), seed=0).eval()
    f = fold_batchnorm(m, torch.randn(3, 1, 8, 8))
    assert f.folds == []
    for name, w in f.weights.items():
        assert torch.equal(w, m.get_submodule(name).weight)
    assert list(layer_matrices(f.weights)["stem.conv"].shape) == [4, 9]


def test_batchnorm_without_running_stats_is_a_model_error():
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False),
                      nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ModelError, match="running statistics"):
        fold_batchnorm(m, torch.randn(6, 4))


def test_unfoldable_batchnorm_is_a_model_error():
    # BatchNorm between two nonlinearities with a ReLU after it: no adjacent linear layer
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.ReLU(),
                      nn.Linear(3, 2)).eval()
    with pytest.raises(ModelError, match="cannot fold"):
        fold_batchnorm(m, torch.randn(6, 4))
