"""Lanczos: basis, tridiagonal, top-k eigenvalues against dense eigh (float64)."""
import numpy as np
import pytest
import torch

from deepscope.errors import ConfigError, ModelError, ShapeError
from deepscope.linalg import lanczos, random_unit_vector, top_eigenvalues
from linalg_reference import sym_with_spectrum


@pytest.fixture
def A():
    lam = torch.cat([torch.tensor([30.0, 12.0, 11.5, 7.0, 4.0]),
                     torch.linspace(-2.0, 2.0, 195, dtype=torch.float64)])
    return sym_with_spectrum(lam)


def test_basis_is_orthonormal_and_tridiagonalizes(A):
    v0 = random_unit_vector(200, seed=3)
    dec = lanczos(lambda v: A @ v, v0, 60)
    Q = dec.basis
    assert dec.steps == 60 and dec.num_matvecs == 60 and not dec.breakdown
    torch.testing.assert_close(Q @ Q.T, torch.eye(60, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(Q @ A @ Q.T, dec.tridiagonal(), rtol=0, atol=1e-11)


def test_top_k_matches_dense(A):
    ref = torch.linalg.eigvalsh(A).flip(0)
    res = top_eigenvalues(lambda v: A @ v, 200, k=5, tol=1e-12, return_vectors=True)
    assert res.converged and res.num_matvecs < 200
    torch.testing.assert_close(res.eigenvalues, ref[:5], rtol=1e-10, atol=0)
    assert (res.residuals <= 1e-12 * 30 * 1.01).all()
    true_res = (A @ res.eigenvectors - res.eigenvectors * res.eigenvalues).norm(dim=0)
    torch.testing.assert_close(true_res, res.residuals, rtol=0, atol=1e-9)


def test_close_top_pair_is_resolved(A):
    # 12 and 11.5: power iteration struggles, Lanczos separates them
    res = top_eigenvalues(lambda v: A @ v, 200, k=3, tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues.numpy(), [30.0, 12.0, 11.5], rtol=1e-9)


@pytest.mark.parametrize("which, expect", [("smallest", [-2.0, -2.0 + 4 / 194]),
                                           ("magnitude", [30.0, 12.0])])
def test_which(A, which, expect):
    res = top_eigenvalues(lambda v: A @ v, 200, k=2, which=which, tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues.numpy(), expect, rtol=1e-8)


def test_scipy_method_agrees(A):
    res = top_eigenvalues(lambda v: A @ v, 200, k=4, tol=1e-12, method="scipy")
    ref = torch.linalg.eigvalsh(A).flip(0)[:4]
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-10, atol=0)
    assert res.num_matvecs > 0


def test_low_rank_breaks_down_exactly():
    lam = torch.zeros(50, dtype=torch.float64)
    lam[:3] = torch.tensor([5.0, 3.0, 1.0])
    B = sym_with_spectrum(lam, seed=1)
    res = top_eigenvalues(lambda v: B @ v, 50, k=3)
    assert res.num_matvecs <= 5  # Krylov space of a rank-3 matrix: dimension <= 4
    np.testing.assert_allclose(res.eigenvalues.numpy(), [5.0, 3.0, 1.0], rtol=1e-12)


def test_float32_and_seed_determinism(A):
    A32 = A.float()
    a = top_eigenvalues(lambda v: A32 @ v, 200, k=2, dtype=torch.float32, seed=7)
    b = top_eigenvalues(lambda v: A32 @ v, 200, k=2, dtype=torch.float32, seed=7)
    assert a.eigenvalues.dtype == torch.float32
    assert torch.equal(a.eigenvalues, b.eigenvalues) and a.num_matvecs == b.num_matvecs
    np.testing.assert_allclose(a.eigenvalues.numpy(), [30.0, 12.0], rtol=1e-5)


def test_errors(A):
    mv = lambda v: A @ v  # noqa: E731
    with pytest.raises(ConfigError):
        top_eigenvalues(mv, 200, k=0)
    with pytest.raises(ConfigError):
        top_eigenvalues(mv, 200, which="biggest")
    with pytest.raises(ConfigError):
        top_eigenvalues(mv, 200, method="arnoldi")
    with pytest.raises(ShapeError):
        top_eigenvalues(mv, 0)
    with pytest.raises(ShapeError, match="expected"):
        top_eigenvalues(lambda v: v[:10], 200)
    with pytest.raises(ModelError, match="finite"):
        top_eigenvalues(lambda v: v * float("nan"), 200)
    with pytest.raises(ConfigError):
        lanczos(mv, torch.zeros(200, dtype=torch.float64), 5)


@pytest.mark.parametrize("seed", range(5))
def test_rtol_stops_early_at_the_requested_accuracy(seed):
    # a Hessian-like spectrum: a few outliers over a large bulk near zero
    lam = torch.cat([torch.tensor([1.0, 0.55, 0.3, 0.2]),
                     torch.rand(396, generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float64) * 0.02 - 0.002])
    B = sym_with_spectrum(lam, seed=seed)
    strict = top_eigenvalues(lambda v: B @ v, 400, k=1, tol=1e-10, seed=seed)
    loose = top_eigenvalues(lambda v: B @ v, 400, k=1, tol=1e-10, rtol=1e-3, seed=seed)
    assert loose.num_matvecs < strict.num_matvecs
    assert abs(float(loose.eigenvalues[0]) - 1.0) <= 1e-3
    assert abs(float(strict.eigenvalues[0]) - 1.0) <= 1e-9
    with pytest.raises(ConfigError, match="rtol"):
        top_eigenvalues(lambda v: B @ v, 400, k=1, rtol=0.0)
    with pytest.raises(ConfigError, match="rtol"):
        top_eigenvalues(lambda v: B @ v, 400, k=1, rtol=1e-3, method="scipy")
