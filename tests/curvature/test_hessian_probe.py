"""deepscope.curvature.hessian end to end: references, quadratic theory, contracts."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from curv_reference import classification_data, dense_ggn, dense_hessian, small_mlp
from deepscope._params import state_fingerprint
from deepscope.curvature import COLUMNS, HessianResult, hessian
from deepscope.data.dataset import Dataset
from deepscope.errors import ConfigError, ModelError, ShapeError

F64 = dict(dtype=torch.float64, progress=False)


def test_top_eigenvalues_match_dense_reference(mlp, cdata):
    x, y = cdata
    ref = torch.linalg.eigvalsh(dense_hessian(mlp, x, y)).flip(0).numpy()
    res = hessian(mlp, (x, y), k=5, which="top", tol=1e-10, **F64)
    got = res.eigenvalues()
    np.testing.assert_allclose(got, ref[:5], rtol=1e-6, atol=0)
    assert res.summary["converged"]
    assert res.summary["top_eigenvalue"] == pytest.approx(ref[0], rel=1e-6)
    rows = res.table[res.table["quantity"] == "eigenvalue"]
    assert (rows["residual"] <= 1e-9 * ref[0]).all()
    assert rows["num_hvps"].iloc[0] < 215  # Krylov: far fewer products than the dimension
    res_scipy = hessian(mlp, (x, y), k=3, which="top", tol=1e-10, eig_method="scipy", **F64)
    np.testing.assert_allclose(res_scipy.eigenvalues(), ref[:3], rtol=1e-6)


def test_table_layout_and_summary(mlp, cdata):
    res = hessian(mlp, cdata, k=3, probes=30, density_runs=2, lanczos_steps=20, **F64)
    assert isinstance(res, HessianResult)
    assert tuple(res.table.columns) == COLUMNS
    assert list(res.table["quantity"]) == ["eigenvalue"] * 3 + ["trace"]
    assert list(res.table["index"]) == [0, 1, 2, 0]
    assert set(res.table["block"]) == {"all"}
    for key in ("top_eigenvalue", "trace", "trace_stderr", "num_hvps", "density_trace",
                "num_params", "num_samples", "converged"):
        assert key in res.summary
    assert res.summary["num_hvps"] == res.table.groupby("quantity")["num_hvps"].max().sum() + 40
    assert np.all(np.isfinite(res.table["value"]))
    assert res.density.shape == res.density_grid.shape
    assert np.trapezoid(res.density, res.density_grid) == pytest.approx(1.0, abs=1e-9)
    d = json.loads(res.to_json())
    assert d["kind"] == "hessian" and len(d["table"]) == 4
    assert "densities" in res.to_dict(include_density=True)


def test_trace_estimates(mlp, cdata):
    x, y = cdata
    true = float(torch.trace(dense_hessian(mlp, x, y)))
    exact = hessian(mlp, (x, y), which="trace", probes=3 * 215, **F64)  # sketch spans all
    assert exact.summary["trace"] == pytest.approx(true, rel=1e-8)
    for method in ("hutch++", "hutchinson"):
        r = hessian(mlp, (x, y), which="trace", probes=60, trace_method=method, **F64)
        se = r.summary["trace_stderr"]
        assert 0 < se and abs(r.summary["trace"] - true) < 5 * se


def test_density_matches_dense_eigenvalues(mlp, cdata):
    x, y = cdata
    evals = torch.linalg.eigvalsh(dense_hessian(mlp, x, y)).numpy()
    res = hessian(mlp, (x, y), which="density", density_runs=8, lanczos_steps=40, **F64)
    dens = res.densities["all"]
    assert np.trapezoid(res.density, res.density_grid) == pytest.approx(1.0, abs=1e-9)
    assert dens.weights.sum() == pytest.approx(1.0, abs=1e-12)
    w1 = wasserstein_distance(dens.nodes, evals, u_weights=dens.weights)
    assert w1 < 0.02 * (evals.max() - evals.min())
    assert res.summary["num_hvps"] == 8 * 40


class Quadratic(nn.Module):
    """forward ignores x and returns θ per sample; with loss ½ θᵀAθ the Hessian is A."""

    def __init__(self, dim):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        return self.theta.expand(x.shape[0], -1)


def test_quadratic_loss_has_the_hessian_we_wrote_down():
    torch.manual_seed(0)
    n = 40
    lam = torch.cat([torch.tensor([50.0, 20.0, 10.0, 5.0, 3.0]), torch.linspace(-1, 1, n - 5)])
    U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    A = U @ torch.diag(lam.double()) @ U.T

    def loss(out, _y):
        return 0.5 * torch.einsum("bi,ij,bj->b", out, A.to(out.dtype), out).mean()

    model = Quadratic(n)
    data = (torch.zeros(8, 1), torch.zeros(8))
    res = hessian(model, data, loss=loss, k=5, probes=3 * n, density_runs=2,
                  lanczos_steps=n, tol=1e-12, **F64)
    np.testing.assert_allclose(res.eigenvalues(), [50, 20, 10, 5, 3], rtol=1e-10)
    assert res.summary["trace"] == pytest.approx(float(lam.double().sum()), abs=1e-7)
    dens = res.densities["all"]  # n steps: the quadrature is exact, nodes = eigenvalues
    for node in dens.nodes[dens.weights > 1e-8]:
        assert np.min(np.abs(lam.numpy() - node)) < 1e-8


def test_ggn_probe_top_eigenvalues(mlp, cdata):
    x, y = cdata
    ref = torch.linalg.eigvalsh(dense_ggn(mlp, x, y)).flip(0).numpy()
    res = hessian(mlp, (x, y), which="top", k=3, ggn=True, tol=1e-10, **F64)
    assert res.kind == "ggn" and res.summary["curvature"] == "ggn"
    np.testing.assert_allclose(res.eigenvalues(), ref[:3], rtol=1e-6)


def test_per_layer_blocks(mlp, cdata):
    x, y = cdata
    H = dense_hessian(mlp, x, y)
    res = hessian(mlp, (x, y), which=("top", "trace"), k=2, probes=315, per_layer=True,
                  tol=1e-10, **F64)
    assert list(dict.fromkeys(res.table["block"])) == ["all", "0", "2", "4"]
    offset = 0
    for block, size in (("0", 84), ("2", 104), ("4", 27)):
        Hb = H[offset:offset + size, offset:offset + size]
        offset += size
        ref = torch.linalg.eigvalsh(Hb).flip(0).numpy()
        np.testing.assert_allclose(res.eigenvalues(block), ref[:2], rtol=1e-6)
        rows = res.table[res.table["block"] == block]
        assert (rows["num_params"] == size).all()
        tr = rows[rows["quantity"] == "trace"]["value"].iloc[0]
        assert tr == pytest.approx(float(torch.trace(Hb)), rel=1e-8)  # 315 // 3 >= size: exact


def test_model_untouched_and_modes_restored(cdata):
    model = small_mlp(batchnorm=True)
    model.train()
    model[0].weight.requires_grad_(False)
    before = state_fingerprint(model)
    hessian(model, cdata, k=2, probes=9, density_runs=1, lanczos_steps=5, per_layer=True,
            progress=False)
    assert state_fingerprint(model) == before
    assert model.training and not model[0].weight.requires_grad


def test_dropout_in_training_mode_is_refused(cdata):
    model = small_mlp(dropout=0.5)
    model.train()
    with pytest.raises(ModelError, match="Dropout"):
        hessian(model, cdata, progress=False)
    model.eval()  # in eval mode dropout is off: fine
    res = hessian(model, cdata, which="top", k=1, progress=False)
    assert np.isfinite(res.summary["top_eigenvalue"])


def test_deterministic_with_seed_and_dataset_input():
    x, y = classification_data(80)
    ds = Dataset(x, y, x[:4], y[:4], task="classification", num_classes=3)
    model = small_mlp()
    kw = dict(k=2, probes=12, density_runs=1, lanczos_steps=8, max_samples=50, progress=False)
    a = hessian(model, ds, **kw)
    b = hessian(model, ds, **kw)
    assert a.table.equals(b.table)
    assert a.summary["num_samples"] == 50
    np.testing.assert_array_equal(a.density, b.density)
    c = hessian(model, ds, **{**kw, "seed": 1})
    assert not np.array_equal(a.table["value"], c.table["value"])


def test_regression_defaults_to_mse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x, y = torch.randn(40, 3), torch.randn(40, 2)
    res = hessian(model, (x, y), which="top", k=2, tol=1e-10, **F64)
    assert res.summary["loss"] == "mse"
    ref = torch.linalg.eigvalsh(dense_hessian(model, x, y, lambda o, t: ((o - t) ** 2).mean()))
    np.testing.assert_allclose(res.eigenvalues(), ref.flip(0)[:2].numpy(), rtol=1e-6)


@pytest.mark.parametrize("kw, err", [
    (dict(which="curvature"), ConfigError), (dict(k=0), ConfigError),
    (dict(trace_method="xtrace"), ConfigError), (dict(probes=2), ConfigError),
    (dict(per_layer="layers"), ConfigError), (dict(dtype=torch.float16), ConfigError),
    (dict(max_samples=0), ConfigError), (dict(loss="hinge"), ConfigError),
])
def test_bad_options(mlp, cdata, kw, err):
    with pytest.raises(err):
        hessian(mlp, cdata, progress=False, **kw)


def test_bad_data(mlp):
    x, y = classification_data()
    with pytest.raises(ShapeError):
        hessian(mlp, (x, y[:10]), progress=False)
    with pytest.raises(ShapeError):
        hessian(mlp, (torch.randn(64, 5), y), progress=False)
    with pytest.raises(ConfigError):
        hessian("model.pt", (x, y), progress=False)


def test_frozen_parameters_are_held_fixed(cdata):
    """As PyHessian: the Hessian over the parameters that require grad."""
    x, y = cdata
    model = small_mlp()
    for p in model[0].parameters():
        p.requires_grad_(False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    ref = torch.linalg.eigvalsh(dense_hessian(model, x, y, names=trainable)).flip(0).numpy()
    res = hessian(model, (x, y), k=3, which="top", tol=1e-10, per_layer=True, **F64)
    np.testing.assert_allclose(res.eigenvalues(), ref[:3], rtol=1e-6, atol=0)
    assert res.summary["num_params"] == 215 - 84 and res.summary["num_frozen_params"] == 84
    assert set(res.table["block"]) == {"all", "2", "4"}
    assert all(p.requires_grad is False for p in model[0].parameters())  # untouched
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ModelError, match="trainable"):
        hessian(model, (x, y), which="top", progress=False)


def test_order_by_magnitude_finds_a_dominant_negative_eigenvalue():
    """A saddle: |λ_min| = 30 beats λ_max = 12. 'largest' reports 12, 'magnitude' -30 (what
    PyHessian's power iteration converges to)."""
    torch.manual_seed(1)
    n = 30
    lam = torch.cat([torch.tensor([12.0, 4.0, -30.0]), torch.linspace(-1, 1, n - 3)])
    U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    A = U @ torch.diag(lam.double()) @ U.T

    def loss(out, _y):
        return 0.5 * torch.einsum("bi,ij,bj->b", out, A.to(out.dtype), out).mean()

    model, data = Quadratic(n), (torch.zeros(8, 1), torch.zeros(8))
    kw = dict(loss=loss, k=2, which="top", tol=1e-12, **F64)
    np.testing.assert_allclose(hessian(model, data, **kw).eigenvalues(), [12, 4], rtol=1e-9)
    mag = hessian(model, data, order="magnitude", **kw)
    np.testing.assert_allclose(mag.eigenvalues(), [-30, 12], rtol=1e-9)
    assert mag.settings["order"] == "magnitude"
    with pytest.raises(ConfigError, match="order"):
        hessian(model, data, order="smallest", **kw)


def test_eigenvectors_against_the_dense_hessian(mlp, cdata):
    """vectors=True: unit-norm eigenvectors over the trainable parameters, H v = λ v against
    a dense float64 Hessian, orthonormal, parallel to the dense eigenvectors, sign fixed."""
    x, y = cdata
    model = small_mlp()
    for p in model[0].parameters():  # frozen: not in the vectors
        p.requires_grad_(False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    H = dense_hessian(model, x, y, names=trainable)
    lam, U = torch.linalg.eigh(H)
    res = hessian(model, (x, y), k=3, which="top", tol=1e-10, vectors=True, **F64)
    assert len(res.eigenvectors) == 3 and res.settings["vectors"] is True
    V = []
    for i, vec in enumerate(res.eigenvectors):
        assert list(vec) == trainable
        for name, t in vec.items():
            assert t.shape == dict(model.named_parameters())[name].shape
        v = torch.cat([vec[n].reshape(-1) for n in trainable])
        assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)
        assert float(v[int(v.abs().argmax())]) > 0
        lam_i = res.eigenvalues()[i]
        assert float((H @ v - lam_i * v).norm()) <= 1e-8 * float(lam[-1])
        assert abs(float(U[:, -1 - i] @ v)) == pytest.approx(1.0, abs=1e-8)
        V.append(v)
    V = torch.stack(V)
    torch.testing.assert_close(V @ V.T, torch.eye(3, dtype=V.dtype), atol=1e-10, rtol=0)
    # float32, seed-independent up to rounding (the sign is canonical)
    a = hessian(mlp, (x, y), k=1, which="top", vectors=True, seed=0, progress=False)
    b = hessian(mlp, (x, y), k=1, which="top", vectors=True, seed=5, progress=False)
    va, vb = (torch.cat([t.reshape(-1) for t in r.eigenvectors[0].values()]) for r in (a, b))
    assert float((va - vb).norm()) < 1e-3
    assert hessian(mlp, (x, y), k=1, which="top", progress=False).eigenvectors == []
    with pytest.raises(ConfigError, match="vectors"):
        hessian(mlp, (x, y), which="trace", vectors=True, progress=False)
