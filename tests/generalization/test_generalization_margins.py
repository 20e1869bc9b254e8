"""margins(): per-sample margins against explicit one-sample-at-a-time gradients, ν_l against
a direct covariance trace, the signature against numpy percentiles, layer choice, contracts."""
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.data import load_dataset
from deepscope.errors import ConfigError, ShapeError
from deepscope.generalization.margins import (EPS, STATS, default_margin_layers, log_features,
                                              margins, signature_names)
from deepscope.nets import build_model, complete_arch_spec


def _model(arch: dict, input_shape, seed=0, dtype=torch.float64):
    spec = complete_arch_spec({**arch, "input_shape": list(input_shape), "num_outputs": 10})
    return build_model(spec, seed=seed).to(dtype)


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits", "n_train": 120, "n_test": 60, "seed": 3})


def _data64(ds):
    return (ds.x_train.double(), ds.y_train), (ds.x_test.double(), ds.y_test)


# ----------------------------------------------------------------------------- references

def _ref_grad_per_sample(model, layer, x1, y1):
    """(f_i - f_j, ∇_{h_layer}(f_i - f_j)) for ONE sample: capture h, rerun with h replaced by
    a leaf tensor (forward hook returning it), differentiate with torch.autograd.grad."""
    model.eval()
    with torch.no_grad():
        logits = model(x1)
    y = int(y1)
    other = logits[0].clone()
    other[y] = -float("inf")
    j = int(other.argmax())
    if layer == "input":
        leaf = x1.clone().requires_grad_(True)
        out = model(leaf)
    else:
        mod = dict(model.named_modules())[layer]
        store = {}
        h1 = mod.register_forward_hook(lambda m, a, o: store.setdefault("h", o.detach()))
        with torch.no_grad():
            model(x1)
        h1.remove()
        leaf = store["h"].clone().requires_grad_(True)
        h2 = mod.register_forward_hook(lambda m, a, o: leaf)
        out = model(x1)
        h2.remove()
    diff = out[0, y] - out[0, j]
    (g,) = torch.autograd.grad(diff, leaf)
    return float(diff.detach()), float(g.pow(2).sum())


def _ref_hidden(model, layer, x):
    """All outputs of ``layer`` on x (one forward, no hooks shared with margins())."""
    if layer == "input":
        return x.reshape(x.shape[0], -1).numpy()
    store = {}
    mod = dict(model.named_modules())[layer]
    h = mod.register_forward_hook(lambda m, a, o: store.setdefault("h", o.detach()))
    model.eval()
    with torch.no_grad():
        model(x)
    h.remove()
    return store["h"].reshape(x.shape[0], -1).numpy()


def _ref_margins(model, layers, x, y, x_tr, correct_only=True):
    out = {}
    for layer in layers:
        H = _ref_hidden(model, layer, x_tr)
        nu = np.sqrt(np.trace(np.cov(H, rowvar=False)))
        ms = []
        for n in range(x.shape[0]):
            diff, sq = _ref_grad_per_sample(model, layer, x[n:n + 1], y[n])
            if correct_only and not diff > 0:
                continue
            ms.append(diff / np.sqrt(sq + 1e-6) / nu)
        out[layer] = (np.array(ms), nu)
    return out


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("arch", [
    {"arch": "mlp", "widths": [16, 12, 8]},
    {"arch": "mlp", "widths": [16, 12], "batchnorm": True, "dropout": 0.3},
])
def test_mlp_margins_match_per_sample_gradients(digits, arch):
    (x, y), _ = _data64(digits)
    x, y = x[:40], y[:40]
    model = _model(arch, [64])
    layers = default_margin_layers(model)
    res = margins(model, (x, y), batch_size=17, correct_only=False, progress=False)
    ref = _ref_margins(model, layers, x, y, x, correct_only=False)
    for k, layer in enumerate(layers):
        key = list(res.margins)[k]
        want, nu = ref[layer]
        np.testing.assert_allclose(res.nu[key], nu, rtol=1e-10)
        np.testing.assert_allclose(res.margins[key], want, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(res.raw_margins[key], want * nu, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("arch,shape", [
    ({"arch": "cnn", "width": 0.05}, [1, 8, 8]),
    ({"arch": "resnet", "width": 2, "blocks": [1, 1, 1], "batchnorm": True}, [1, 8, 8]),
])
def test_conv_margins_match_per_sample_gradients(digits, arch, shape):
    x = digits.x_train[:8].double().reshape(-1, *shape)
    y = digits.y_train[:8]
    model = _model(arch, shape)
    layers = default_margin_layers(model)
    res = margins(model, (x, y), batch_size=16, correct_only=False, progress=False)
    ref = _ref_margins(model, layers, x, y, x, correct_only=False)
    for k, layer in enumerate(layers):
        key = list(res.margins)[k]
        np.testing.assert_allclose(res.nu[key], ref[layer][1], rtol=1e-10)
        np.testing.assert_allclose(res.margins[key], ref[layer][0], rtol=1e-5, atol=1e-8)


def test_correct_only_and_misclassified_sign(digits):
    (x, y), _ = _data64(digits)
    model = _model({"arch": "mlp", "widths": [8]}, [64])  # untrained: mostly wrong
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    right = (pred == y).numpy()
    all_pts = margins(model, (x, y), correct_only=False, progress=False)
    only = margins(model, (x, y), progress=False)
    m_all = all_pts.margins["input"]
    assert m_all.size == x.shape[0]
    assert ((m_all > 0) == right).all()  # wrong points: j = predicted class -> negative
    assert only.summary["n_used"] == right.sum() == only.summary["n_correct"]
    np.testing.assert_array_equal(only.indices, np.flatnonzero(right))
    np.testing.assert_allclose(only.margins["input"], m_all[right])
    assert only.table["frac_negative"].eq(0).all()
    np.testing.assert_allclose(all_pts.table["frac_negative"].iloc[0], 1 - right.mean())


def test_eps_goes_inside_the_sqrt():
    """A layer that does not reach the logits has zero gradient: d = (f_i - f_j)/sqrt(1e-6)."""
    torch.manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.zeros(10, dtype=torch.int64)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2).double()
            self.dead = nn.Linear(3, 4).double()

        def forward(self, x):
            self.dead(x)  # computed, not used
            return self.lin(x)

    net = Net()
    res = margins(net, (x, y), layers=["dead"], correct_only=False, progress=False)
    with torch.no_grad():
        out = net(x)
    diff = (out[:, 0] - out[:, 1]).numpy()
    np.testing.assert_allclose(res.raw_margins["dead"], diff / np.sqrt(EPS), rtol=1e-12)


def test_batch_size_and_nu_streaming(digits):
    (x, y), _ = _data64(digits)
    model = _model({"arch": "mlp", "widths": [16, 16], "batchnorm": True}, [64])
    a = margins(model, (x, y), batch_size=7, progress=False)
    b = margins(model, (x, y), batch_size=1000, progress=False)
    for key in a.margins:
        np.testing.assert_allclose(a.margins[key], b.margins[key], rtol=1e-10)
        np.testing.assert_allclose(a.nu[key], b.nu[key], rtol=1e-12)


def test_nu_uses_the_training_split(digits):
    model = _model({"arch": "mlp", "widths": [16]}, [64], dtype=torch.float32)
    res = margins(model, digits, split="test", correct_only=False, progress=False)
    assert res.summary["n_points"] == digits.x_test.shape[0]
    for layer, key in zip(res.layers, res.margins):
        H = _ref_hidden(model, layer, digits.x_train).astype(np.float64)
        np.testing.assert_allclose(res.nu[key], np.sqrt(np.trace(np.cov(H, rowvar=False))),
                                   rtol=1e-5)


# ----------------------------------------------------------------------------- signature

def test_signature_against_numpy_percentiles(digits):
    (x, y), _ = _data64(digits)
    model = _model({"arch": "mlp", "widths": [16, 12, 8]}, [64])
    res = margins(model, (x, y), correct_only=False, progress=False)
    sig = res.signature()
    assert list(sig.index) == signature_names(4) and len(sig) == 20
    for k, key in enumerate(res.margins):
        m = res.margins[key]
        q1, q2, q3 = np.percentile(m, [25, 50, 75])
        want = [q1, q2, q3, q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)]
        got = [sig[f"l{k}_{s}"] for s in STATS]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        row = res.table.iloc[k]
        np.testing.assert_allclose([row["mean"], row["std"], row["min"], row["max"]],
                                   [m.mean(), m.std(), m.min(), m.max()], rtol=1e-12)
    logsig = res.signature(log=True)
    assert list(logsig.index) == signature_names(4, log=True)
    np.testing.assert_allclose(logsig.to_numpy(), np.log(np.abs(sig.to_numpy())), rtol=1e-12)
    assert res.summary["signature"] == pytest.approx(sig.to_dict())
    np.testing.assert_allclose(log_features([0.0, -2.0, np.nan]),
                               [np.log(1e-12), np.log(2.0), np.nan])


# ----------------------------------------------------------------------------- layers

@pytest.mark.parametrize("arch,shape,want", [
    ({"arch": "mlp", "widths": [5]}, [64], ["input", "fc1", "out", "out"]),
    ({"arch": "mlp", "widths": [5, 5]}, [64], ["input", "fc1", "fc2", "out"]),
    ({"arch": "mlp", "widths": [5] * 3}, [64], ["input", "fc1", "fc2", "fc3"]),
    ({"arch": "mlp", "widths": [5] * 5, "batchnorm": True}, [64], ["input", "bn1", "bn3", "bn5"]),
    ({"arch": "mlp", "widths": [5] * 4}, [64], ["input", "fc1", "fc3", "fc4"]),
    ({"arch": "cnn", "width": 0.05}, [1, 8, 8],
     ["input", "features.conv1", "classifier.fc1", "classifier.fc2"]),
    ({"arch": "resnet", "width": 4}, [1, 8, 8], ["input", "stages.0", "stages.1", "stages.2"]),
    ({"arch": "resnet", "width": 4, "blocks": [1, 1]}, [1, 8, 8],
     ["input", "stages.0.0", "stages.1.0", "head"]),
])
def test_default_layers(arch, shape, want):
    assert default_margin_layers(_model(arch, shape)) == want


def test_explicit_layers_and_checkpoint_path(tmp_path):
    from deepscope.workflows import train_and_save
    ckpt = tmp_path / "m.safetensors"
    train_and_save({"arch": "mlp", "widths": [16]}, {"name": "digits", "n_train": 100},
                   {"epochs": 2, "lr": 0.1}, ckpt, progress=False)
    res = margins(ckpt, layers="input,out", progress=False)
    assert res.layers == ["input", "out"]
    assert list(res.table["layer"]) == ["input", "out"]
    assert len(res.signature()) == 10
    # the output layer: ∇_f (f_i - f_j) = e_i - e_j, so d = (f_i - f_j)/sqrt(2 + 1e-6)
    import deepscope
    c = deepscope.load(ckpt)
    x, y = c.dataset().split("train")
    with torch.no_grad():
        f = c.model.eval()(x).double()
    other = f.clone()
    other[torch.arange(len(y)), y] = -np.inf
    d = (f[torch.arange(len(y)), y] - other.max(1).values).numpy()
    np.testing.assert_allclose(res.raw_margins["out"], d[d > 0] / np.sqrt(2 + 1e-6),
                               rtol=1e-5)


# ----------------------------------------------------------------------------- contracts

def test_model_untouched(digits):
    model = _model({"arch": "mlp", "widths": [16, 16], "batchnorm": True, "dropout": 0.2},
                   [64], dtype=torch.float32)
    model.train()
    fp = state_fingerprint(model)
    margins(model, digits, progress=False)
    assert state_fingerprint(model) == fp
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_errors(digits):
    model = _model({"arch": "mlp", "widths": [8]}, [64], dtype=torch.float32)
    with pytest.raises(ConfigError, match="unknown layer 'nope'"):
        margins(model, digits, layers=["nope"], progress=False)
    with pytest.raises(ConfigError, match="split"):
        margins(model, digits, split="valid", progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        margins(model, digits, batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="classification"):
        margins(model, load_dataset({"name": "polyreg", "n_train": 20, "n_test": 10}),
                progress=False)
    with pytest.raises(ShapeError, match="integer class labels"):
        margins(model, (digits.x_train, digits.y_train.float()), progress=False)
    with pytest.raises(ConfigError, match="Dataset or an"):
        margins(model, digits.x_train, progress=False)
    with pytest.raises(ConfigError, match="nn.Module"):
        margins(42, digits, progress=False)


def test_plot_and_demo_section(tmp_path, digits):
    from deepscope.report.generalization import margins_section, plot_margins
    from deepscope.workflows import train_and_save
    run = train_and_save({"arch": "mlp", "widths": [256, 128]},
                         {"name": "digits", "n_train": 300},
                         {"epochs": 1, "lr": 0.05, "momentum": 0.9}, None, progress=False)
    ctx = SimpleNamespace(model=run.model, dataset=run.dataset, progress=False, seed=0,
                          out=tmp_path)
    t0 = time.perf_counter()
    sec = margins_section(ctx)
    assert time.perf_counter() - t0 < 10
    assert sec.title == "Margin distributions"
    assert len(sec.figures) == 1 and len(sec.figures[0][1].axes) == 4
    assert list(sec.tables[0][1]["layer"]) == ["input", "fc1", "fc2", "out"]
    fig = plot_margins(margins(run.model, run.dataset, layers=["input", "fc1"],
                               progress=False))
    assert len(fig.axes) == 2
