"""hessian(start="output-layer"): the output layer is found by execution order, the start
changes how many products Lanczos needs but not what it finds, and its interlacing bounds
keep the rtol estimate honest; top_eigenvalues(v0=..., lower_bounds=...)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curv_reference import dense_hessian
from deepscope.curvature import CurvatureOperator, hessian
from deepscope.curvature.operators import stable_cross_entropy
from deepscope.curvature.start import output_layer
from deepscope.errors import ConfigError, ShapeError
from deepscope.linalg import top_eigenvalues
from deepscope.linalg.lanczos import _error_estimates

F64 = dict(dtype=torch.float64, progress=False)


class HeadFirst(nn.Module):
    """The head is registered before the body but runs last; a parameter-free op follows."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Sequential(nn.Linear(5, 8), nn.Tanh())

    def forward(self, x):
        return F.log_softmax(self.head(self.body(x)), dim=1)


class Bare(nn.Module):
    """Parameters owned by the root module itself."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 5))
        self.b = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return x @ self.w.T + self.b


def trained_classifier(seed=2, steps=300):
    """A 10-32-32-4 ReLU MLP trained to a loss ~1e-6 on four Gaussian blobs (1540 params)."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(4, 10, generator=g)
    y = torch.randint(0, 4, (512,), generator=g)
    x = centers[y] + torch.randn(512, 10, generator=g)
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                      nn.Linear(32, 4))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval(), x, y


def test_output_layer_follows_execution_order():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    assert output_layer(seq, torch.randn(2, 4)) == ("2", ["2.weight", "2.bias"])
    assert output_layer(HeadFirst(), torch.randn(2, 5)) == ("head", ["head.weight",
                                                                     "head.bias"])
    assert output_layer(Bare(), torch.randn(2, 5)) == ("", ["w", "b"])
    m = HeadFirst()
    assert not m._forward_hooks and not m.head._forward_hooks  # hooks removed


def test_same_eigenvalues_as_the_dense_reference(mlp, cdata):
    x, y = cdata
    ref = torch.linalg.eigvalsh(dense_hessian(mlp, x, y)).flip(0).numpy()
    res = hessian(mlp, (x, y), k=3, which="top", tol=1e-10, start="output-layer", **F64)
    np.testing.assert_allclose(res.eigenvalues(), ref[:3], rtol=1e-6, atol=0)
    s = res.summary
    assert s["start"] == "output-layer" and s["start_layer"] == "4"
    assert s["start_block"] == ["4.weight", "4.bias"] and s["start_hvps"] > 0
    assert len(s["start_bounds"]) == 4
    # the bounds are the output block's top eigenvalues, below the full ones (interlacing)
    block = torch.linalg.eigvalsh(dense_hessian(mlp, x, y, names=s["start_block"])).flip(0)
    np.testing.assert_allclose(s["start_bounds"], block[:4].numpy(), rtol=1e-3, atol=1e-8)
    assert all(b <= lam + 1e-12 for b, lam in zip(s["start_bounds"], ref))
    # per-layer blocks start at random and are unaffected
    per = hessian(mlp, (x, y), k=1, which="top", tol=1e-10, per_layer=True,
                  start="output-layer", **F64)
    ref_block = torch.linalg.eigvalsh(dense_hessian(mlp, x, y, names=["0.weight", "0.bias"]))
    row = per.table[(per.table["block"] == "0") & (per.table["quantity"] == "eigenvalue")]
    assert float(row["value"].iloc[0]) == pytest.approx(float(ref_block[-1]), rel=1e-6)


def test_fewer_products_on_a_trained_classifier_within_rtol():
    m, x, y = trained_classifier()
    op = CurvatureOperator(m, x, y, stable_cross_entropy, dtype=torch.float64)
    lam = float(top_eigenvalues(op, op.dim, k=1, tol=1e-12, method="scipy").eigenvalues[0])
    runs = {s: hessian(m, (x, y), which="top", k=1, rtol=1e-3, start=s, **F64)
            for s in ("random", "output-layer")}
    for r in runs.values():
        assert abs(r.summary["top_eigenvalue"] - lam) <= 1e-3 * lam
    assert runs["output-layer"].summary["num_hvps"] < runs["random"].summary["num_hvps"]
    # to convergence both reach the same number
    tight = hessian(m, (x, y), which="top", k=1, tol=1e-10, start="output-layer", **F64)
    assert tight.summary["top_eigenvalue"] == pytest.approx(lam, rel=1e-9)


def test_interlacing_bound_makes_the_estimate_conservative():
    # after two steps the second Ritz value (0.01) is far below lambda_2 (0.9): with the
    # bound 0.8 <= lambda_2 the gap shrinks from 0.99 to 0.2 and the estimate grows 5x
    theta = torch.tensor([0.01, 1.0], dtype=torch.float64)
    idx = torch.tensor([1])
    res = torch.tensor([0.05], dtype=torch.float64)
    plain = float(_error_estimates(theta, idx, res)[0])
    bounded = float(_error_estimates(theta, idx, res, [1.0, 0.8])[0])
    assert plain == pytest.approx(0.05 ** 2 / 0.99)
    assert bounded == pytest.approx(0.05 ** 2 / 0.2)
    # a bound above the Ritz value itself: no gap is known, the residual is the estimate
    assert float(_error_estimates(theta, idx, res, [1.0, 1.2])[0]) == pytest.approx(0.05)


def test_v0_start_and_errors():
    lam = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    A = Q @ torch.diag(lam) @ Q.T
    exact = top_eigenvalues(lambda v: A @ v, 5, k=1, v0=Q[:, 0] * 3.0)
    assert exact.num_matvecs == 1 and float(exact.eigenvalues[0]) == pytest.approx(5.0)
    with pytest.raises(ShapeError):
        top_eigenvalues(lambda v: A @ v, 5, v0=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ConfigError):
        top_eigenvalues(lambda v: A @ v, 5, v0=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ConfigError):
        top_eigenvalues(lambda v: A @ v, 5, k=1, method="scipy", v0=Q[:, 0])


def test_bad_start_options(mlp, cdata):
    with pytest.raises(ConfigError, match="start must be one of"):
        hessian(mlp, cdata, which="top", start="first-layer", progress=False)
    with pytest.raises(ConfigError, match="eig_method='lanczos' only"):
        hessian(mlp, cdata, which="top", start="output-layer", eig_method="scipy",
                progress=False)


def test_a_much_larger_eigenvalue_elsewhere_is_still_found():
    # inputs x30 and first-layer weights /30: the same function, but the first layer's
    # curvature grows 900x and the top eigenvector leaves the output layer; the start's
    # random part, amplified by that eigenvalue, brings it into the Krylov space
    m, x, y = trained_classifier()
    with torch.no_grad():
        m[0].weight.div_(30.0)
    x = 30.0 * x
    op = CurvatureOperator(m, x, y, stable_cross_entropy, dtype=torch.float64)
    lam = float(top_eigenvalues(op, op.dim, k=1, tol=1e-12, method="scipy").eigenvalues[0])
    res = hessian(m, (x, y), which="top", k=1, rtol=1e-3, start="output-layer", **F64)
    assert abs(res.summary["top_eigenvalue"] - lam) <= 1e-3 * lam
    assert res.summary["start_bounds"][0] < 0.5 * lam  # the block's own top is far below
