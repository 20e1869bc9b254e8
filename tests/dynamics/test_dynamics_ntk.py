"""deepscope.dynamics.ntk: exact kernels, the slow autograd reference, methods, contracts."""
import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.dynamics.ntk import ntk, probe_inputs
from deepscope.errors import ConfigError, ModelError, ShapeError
from deepscope.nets import build_model, complete_arch_spec
from dynamics_reference import slow_ntk

METHODS = ("jacobian", "ntk-vp")


def _x(n=7, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_without_bias_is_x_xt(method):
    X = _x()
    lin = nn.Linear(5, 1, bias=False).double()
    r = ntk(lin, X, method=method)
    torch.testing.assert_close(r.gram, X @ X.T, rtol=0, atol=1e-12)
    assert r.summary["num_params"] == 5 and r.summary["n"] == 7


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_with_bias_and_outputs(method):
    X = _x()
    lin = nn.Linear(5, 3).double()
    K = X @ X.T + 1
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(ntk(lin, X, method=method, outputs=1).gram, K,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(ntk(lin, X, method=method, outputs="sum").gram, 3 * K,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(ntk(lin, X, method=method, outputs="all").gram,
                               torch.kron(K, eye), rtol=0, atol=1e-12)
    torch.testing.assert_close(ntk(lin, X, method=method, outputs=-1).gram, K,
                               rtol=0, atol=1e-12)


def _mlp():
    spec = complete_arch_spec({"arch": "mlp", "widths": [6, 5], "batchnorm": True,
                               "input_shape": [4], "num_outputs": 3})
    m = build_model(spec, seed=0)
    # non-trivial BatchNorm running statistics (eval mode must use them)
    with torch.no_grad():
        m.train()
        m(torch.randn(64, 4, generator=torch.Generator().manual_seed(3)) * 2 + 1)
    return m


def _cnn():
    spec = complete_arch_spec({"arch": "cnn", "width": 0.03, "input_shape": [1, 8, 8],
                               "num_outputs": 3})
    return build_model(spec, seed=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("outputs", ["sum", "all", 2])
def test_mlp_against_slow_autograd_jacobian(method, outputs):
    model = _mlp()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    before = state_fingerprint(model)
    r = ntk(model, x, outputs=outputs, method=method, dtype=torch.float64, batch_size=4)
    assert state_fingerprint(model) == before and model.training  # flags restored
    ref = slow_ntk(model, x, outputs)
    err = (r.gram - ref).abs().max() / ref.abs().max()
    assert err < 1e-5, err


@pytest.mark.parametrize("method", METHODS)
def test_cnn_against_slow_autograd_jacobian(method):
    model = _cnn()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    before = state_fingerprint(model)
    for outputs in ("all", "sum"):
        r = ntk(model, x, outputs=outputs, method=method, dtype=torch.float64, batch_size=2)
        ref = slow_ntk(model, x, outputs)
        assert float((r.gram - ref).abs().max() / ref.abs().max()) < 1e-5
    assert state_fingerprint(model) == before


def test_float32_close_to_float64_reference():
    model = _mlp()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    r = ntk(model, x)
    assert r.gram.dtype == torch.float32
    ref = slow_ntk(model, x, "sum")
    assert float((r.gram.double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_all_and_sum_are_consistent():
    model = _mlp()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    full = ntk(model, x, outputs="all", dtype=torch.float64).gram
    n, k = 6, 3
    blocks = full.reshape(n, k, n, k)
    torch.testing.assert_close(ntk(model, x, outputs="sum", dtype=torch.float64).gram,
                               torch.einsum("icjc->ij", blocks), rtol=1e-10, atol=1e-10)
    for c in range(k):
        torch.testing.assert_close(ntk(model, x, outputs=c, dtype=torch.float64).gram,
                                   blocks[:, c, :, c], rtol=1e-10, atol=1e-10)


def test_blocked_recomputation_and_auto_choice():
    model = _mlp()
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    full = ntk(model, x, outputs="all", dtype=torch.float64)
    assert full.summary["method"] == "jacobian"
    P = full.summary["num_params"]
    # a budget between one sample's Jacobian pair and the whole Jacobian: blocks recomputed
    mb = 3 * 2 * 3 * P * 8 / 2 ** 20
    blocked = ntk(model, x, outputs="all", dtype=torch.float64, max_memory_mb=mb,
                  batch_size=64)
    assert blocked.summary["method"] == "jacobian"
    torch.testing.assert_close(blocked.gram, full.gram, rtol=1e-12, atol=1e-12)
    # below one sample's Jacobian pair, auto switches to NTK-vector products
    tiny = ntk(model, x, outputs="all", dtype=torch.float64, max_memory_mb=P * 8 / 2 ** 20)
    assert tiny.summary["method"] == "ntk-vp"
    torch.testing.assert_close(tiny.gram, full.gram, rtol=1e-10, atol=1e-10)


def test_summary_and_table_match_the_gram():
    model = _mlp()
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(6))
    r = ntk(model, x, dtype=torch.float64)
    ev = np.linalg.eigvalsh(r.gram.numpy())
    s = r.summary
    assert s["lambda_min"] == pytest.approx(ev[0], rel=1e-10)
    assert s["lambda_max"] == pytest.approx(ev[-1], rel=1e-10)
    assert s["condition_number"] == pytest.approx(ev[-1] / ev[0], rel=1e-9)
    assert s["trace"] == pytest.approx(np.trace(r.gram.numpy()), rel=1e-12)
    assert list(r.table.columns) == ["index", "eigenvalue", "fraction"]
    np.testing.assert_allclose(r.table["eigenvalue"], ev[::-1], rtol=1e-10)
    assert r.table["fraction"].sum() == pytest.approx(1.0)
    assert s["num_params"] == sum(p.numel() for p in model.parameters())
    assert np.allclose(r.gram.numpy(), r.gram.numpy().T)
    d = r.to_dict(include_gram=True)
    assert len(d["gram"]) == 8 and d["summary"]["method"] == "jacobian"


def test_train_mode_dropout_model_is_evaluated_in_eval_mode():
    spec = complete_arch_spec({"arch": "mlp", "widths": [7], "dropout": 0.5,
                               "input_shape": [4], "num_outputs": 2})
    model = build_model(spec, seed=1)
    model.train()
    before = state_fingerprint(model)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    a = ntk(model, x, dtype=torch.float64).gram
    b = ntk(model, x, dtype=torch.float64).gram
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # deterministic: dropout off
    torch.testing.assert_close(a, slow_ntk(model, x, "sum"), rtol=1e-8, atol=1e-10)
    assert state_fingerprint(model) == before


def test_probe_inputs_from_dataset_and_pairs():
    from deepscope.data import load_dataset
    ds = load_dataset({"name": "digits", "n_train": 50})
    x = probe_inputs(ds, max_samples=10, seed=3)
    assert x.shape == (10, 64)
    assert torch.equal(x, probe_inputs(ds, max_samples=10, seed=3))
    assert probe_inputs((ds.x_train, ds.y_train)).shape[0] == 50
    assert probe_inputs(ds, split="test").shape[0] == ds.x_test.shape[0]


def test_input_errors():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="outputs"):
        ntk(lin, x, outputs="mean")
    with pytest.raises(ConfigError, match="out of range"):
        ntk(lin, x, outputs=2)
    with pytest.raises(ConfigError, match="method"):
        ntk(lin, x, method="exact")
    with pytest.raises(ConfigError, match="batch_size"):
        ntk(lin, x, batch_size=0)
    with pytest.raises(ConfigError, match="dtype"):
        ntk(lin, x, dtype=torch.float16)
    with pytest.raises(ShapeError):
        ntk(lin, torch.randn(0, 3))
    with pytest.raises(ConfigError, match="probe_data"):
        ntk(lin, "inputs")
    with pytest.raises(ModelError, match="no parameters|none"):
        ntk(nn.ReLU(), x)
    with pytest.raises((ModelError, ShapeError)):
        ntk(lin, torch.randn(4, 5))
    with pytest.raises(ConfigError, match="Module"):
        ntk(lambda t: t, x)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            ntk(lin, x, device="cuda")


def test_lstm_falls_back_to_the_per_sample_loop():
    spec = complete_arch_spec({"arch": "lstm", "hidden": 5, "input_shape": [6, 2],
                               "num_outputs": 3})
    model = build_model(spec, seed=0)
    x = torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(0))
    fp = state_fingerprint(model)
    r = ntk(model, x, outputs="all", method="jacobian", dtype=torch.float64, batch_size=3)
    assert r.summary["vectorized"] is False
    ref = slow_ntk(model, x, "all")
    assert float((r.gram - ref).abs().max() / ref.abs().max()) < 1e-8
    assert state_fingerprint(model) == fp
