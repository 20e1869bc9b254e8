"""CurvatureOperator: Hessian/GGN products against dense float64 references."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curv_reference import classification_data, dense_ggn, dense_hessian, small_mlp
from deepscope._params import state_fingerprint
from deepscope.curvature import CurvatureOperator, parameter_blocks
from deepscope.curvature.operators import prepare_data, resolve_loss
from deepscope.data.dataset import Dataset
from deepscope.errors import ConfigError, ModelError, ShapeError


def _op(model, x, y, **kw):
    kw.setdefault("dtype", torch.float64)
    return CurvatureOperator(model, x, y, F.cross_entropy, **kw)


def test_hvp_equals_dense_hessian_times_v(mlp, cdata):
    x, y = cdata
    H = dense_hessian(mlp, x, y)
    op = _op(mlp, x, y)
    assert op.dim == 215 == H.shape[0]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(op.dim, generator=g, dtype=torch.float64)
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=0, atol=1e-10)
    assert op.num_matvecs == 3
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)


def test_batches_accumulate_to_the_full_batch(mlp, cdata):
    x, y = cdata
    v = torch.randn(215, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full = _op(mlp, x, y).matvec(v)
    chunked = _op(mlp, x, y, batch_size=10).matvec(v)  # 6 x 10 + 4: uneven last batch
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-12)


def test_ggn_equals_dense_jt_h_j(mlp, cdata):
    x, y = cdata
    G = dense_ggn(mlp, x, y)
    dense = _op(mlp, x, y, ggn=True, batch_size=20).dense()
    torch.testing.assert_close(dense, G, rtol=0, atol=1e-10)
    assert torch.linalg.eigvalsh(dense).min() > -1e-10  # PSD for cross-entropy


def test_ggn_of_mse_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(30, 4)
    y = torch.randn(30, 2)
    loss, _ = resolve_loss(None, "regression")
    G = dense_ggn(model, x, y, loss)
    op = CurvatureOperator(model, x, y, loss, ggn=True, dtype=torch.float64)
    torch.testing.assert_close(op.dense(), G, rtol=0, atol=1e-10)


@pytest.mark.parametrize("per", ["module", "parameter"])
def test_blocks_are_diagonal_blocks_of_the_dense_hessian(mlp, cdata, per):
    x, y = cdata
    H = dense_hessian(mlp, x, y)
    names = [n for n, _ in mlp.named_parameters()]
    sizes = {n: p.numel() for n, p in mlp.named_parameters()}
    offsets, o = {}, 0
    for n in names:
        offsets[n] = o
        o += sizes[n]
    for _, members in parameter_blocks(names, per):
        idx = torch.cat([torch.arange(offsets[n], offsets[n] + sizes[n]) for n in members])
        block = _op(mlp, x, y, block=members).dense()
        torch.testing.assert_close(block, H[idx][:, idx], rtol=0, atol=1e-10)


def test_parameter_blocks_grouping():
    names = ["0.weight", "0.bias", "2.weight", "scale"]
    assert parameter_blocks(names) == [("0", ["0.weight", "0.bias"]), ("2", ["2.weight"]),
                                       ("scale", ["scale"])]
    assert len(parameter_blocks(names, "parameter")) == 4
    with pytest.raises(ConfigError):
        parameter_blocks(names, "layer")


def test_batchnorm_uses_running_stats_and_model_is_untouched(cdata):
    x, y = cdata
    model = small_mlp(batchnorm=True)
    with torch.no_grad():  # non-trivial running statistics
        model[2].running_mean.uniform_(-0.5, 0.5)
        model[2].running_var.uniform_(0.5, 2.0)
    model.train()
    before = state_fingerprint(model)
    H = dense_hessian(model, x, y)  # eval mode: running stats
    op = _op(model, x, y)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=0, atol=1e-10)
    assert state_fingerprint(model) == before
    assert model.training and all(m.training for m in model.modules())


def test_float32_operator_is_close(mlp, cdata):
    x, y = cdata
    H = dense_hessian(mlp, x, y)
    op = _op(mlp, x, y, dtype=torch.float32)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(3))
    w = op.matvec(v)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w.double(), H @ v.double(), rtol=1e-4, atol=1e-5)


def test_operator_input_errors(mlp, cdata):
    x, y = cdata
    op = _op(mlp, x, y)
    with pytest.raises(ShapeError, match="length 215"):
        op.matvec(torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ConfigError, match="unknown"):
        _op(mlp, x, y, block=["nope.weight"])
    with pytest.raises(ConfigError):
        _op(mlp, x, y, batch_size=0)
    with pytest.raises(ShapeError):  # 5 outputs needed for labels up to 4? targets too big
        _op(mlp, x, y + 5)
    with pytest.raises(ModelError):
        _op(nn.ReLU(), x, y)


def test_prepare_data_and_losses():
    x, y = classification_data(50)
    ds = Dataset(x, y, x[:5], y[:5], task="classification", num_classes=3)
    xs, ys, task = prepare_data(ds, max_samples=20, seed=0)
    assert xs.shape == (20, 6) and task == "classification"
    xs2, _, _ = prepare_data(ds, max_samples=20, seed=0)
    assert torch.equal(xs, xs2)
    _, _, task = prepare_data((x, torch.randn(50, 2)))
    assert task == "regression"
    with pytest.raises(ShapeError, match="50 inputs and 49 targets"):
        prepare_data((x, y[:49]))
    with pytest.raises(ConfigError):
        prepare_data([1, 2, 3])
    with pytest.raises(ConfigError, match="unknown loss"):
        resolve_loss("hinge", "classification")
    assert resolve_loss(None, "classification")[1] == "cross_entropy"


@pytest.mark.parametrize("ggn", [False, True])
def test_matmat_equals_stacked_matvecs(mlp, cdata, ggn):
    x, y = cdata
    op = _op(mlp, x, y, ggn=ggn, batch_size=25, chunk_size=3)
    V = torch.randn(7, op.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    W = op.matmat(V)
    assert op.num_matvecs == 7
    torch.testing.assert_close(W, torch.stack([op.matvec(v) for v in V]), rtol=0, atol=1e-12)
    with pytest.raises(ShapeError):
        op.matmat(V[:, :5])


@pytest.mark.parametrize("cache, batch_size", [(False, 64), (True, 64), (True, 10)])
def test_cached_and_functional_products_agree(mlp, cdata, cache, batch_size):
    x, y = cdata
    H = dense_hessian(mlp, x, y)
    op = _op(mlp, x, y, cache=cache, batch_size=batch_size)
    assert op.cache is cache
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for _ in range(2):  # the second product reuses the kept graph
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=0, atol=1e-10)


def test_unused_and_linear_parameters_give_zero_rows(cdata):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)
            self.unused = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.fc(x)

    x, y = cdata
    model = Net()
    for cache in (True, False):
        op = _op(model, x, y, cache=cache)
        v = torch.ones(op.dim, dtype=torch.float64)
        w = op.matvec(v)
        assert list(dict(model.named_parameters()))[0] == "unused"
        assert torch.all(w[:2] == 0) and torch.isfinite(w).all()
    # a loss linear in the parameters: the Hessian is zero
    lin = CurvatureOperator(model, x, y, lambda out, t: out.sum(), dtype=torch.float64)
    assert torch.all(lin.matvec(torch.ones(lin.dim, dtype=torch.float64)) == 0)
