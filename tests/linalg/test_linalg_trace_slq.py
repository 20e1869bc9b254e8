"""Hutchinson / Hutch++ convergence and SLQ densities against dense spectra."""
import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from deepscope.errors import ConfigError
from deepscope.linalg import gaussian_density, hutchinson, hutchpp, slq, trace_estimate
from linalg_reference import sym_with_spectrum


def _mean_abs_err(fn, A, m, seeds=range(12)):
    true = float(torch.trace(A))
    return np.mean([abs(fn(lambda v: A @ v, A.shape[0], m, seed=s).value - true)
                    for s in seeds])


@pytest.fixture(scope="module")
def decaying():
    """A PSD matrix with a quickly decaying spectrum λ_i = 100 / i²."""
    lam = 100.0 / torch.arange(1, 301, dtype=torch.float64) ** 2
    return sym_with_spectrum(lam, seed=2)


def test_hutchinson_is_exact_on_diagonal_matrices():
    d = torch.linspace(-1, 3, 50, dtype=torch.float64)
    est = hutchinson(lambda v: d * v, 50, 7)
    assert est.value == pytest.approx(float(d.sum()), abs=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12) and est.num_matvecs == 7


@pytest.mark.parametrize("fn", [hutchinson, hutchpp])
def test_error_shrinks_with_more_probes(decaying, fn):
    assert _mean_abs_err(fn, decaying, 150) < 0.5 * _mean_abs_err(fn, decaying, 15)


def test_hutchpp_beats_hutchinson_at_equal_matvecs(decaying):
    for m in (30, 90):
        assert _mean_abs_err(hutchpp, decaying, m) < 0.5 * _mean_abs_err(hutchinson, decaying, m)


def test_stderr_is_calibrated(decaying):
    true = float(torch.trace(decaying))
    for fn in (hutchinson, hutchpp):
        z = [(fn(lambda v: decaying @ v, 300, 60, seed=s).value - true)
             / fn(lambda v: decaying @ v, 300, 60, seed=s).stderr for s in range(30)]
        assert 0.4 < np.std(z) < 2.0


def test_hutchpp_exact_when_the_sketch_spans_the_space():
    A = sym_with_spectrum(torch.linspace(-3, 5, 20, dtype=torch.float64), seed=4)
    est = hutchpp(lambda v: A @ v, 20, 60)
    assert est.value == pytest.approx(float(torch.trace(A)), abs=1e-10)
    assert est.stderr == 0.0 and est.num_matvecs == 60


def test_trace_dispatch_and_errors():
    I = lambda v: v  # noqa: E731
    assert trace_estimate(I, 10, 9, method="hutchinson").value == pytest.approx(10.0)
    assert trace_estimate(I, 10, 9).method == "hutch++"
    with pytest.raises(ConfigError):
        trace_estimate(I, 10, 9, method="xtrace")
    with pytest.raises(ConfigError):
        hutchpp(I, 10, 2)
    with pytest.raises(ConfigError):
        hutchinson(I, 10, 0)


def test_slq_density_integrates_to_one_and_matches_the_spectrum():
    lam = torch.cat([torch.tensor([40.0, 25.0, 15.0], dtype=torch.float64),
                     torch.randn(297, generator=torch.Generator().manual_seed(0),
                                 dtype=torch.float64).abs()])
    A = sym_with_spectrum(lam, seed=5)
    d = slq(lambda v: A @ v, 300, runs=10, steps=40)
    assert d.num_matvecs == 400 and d.runs == 10
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-9)
    assert d.weights.sum() == pytest.approx(1.0, abs=1e-12)
    w1 = wasserstein_distance(d.nodes, lam.numpy(), u_weights=d.weights)
    assert w1 < 0.01 * float(lam.max() - lam.min())
    assert d.trace == pytest.approx(float(lam.sum()), rel=0.1)
    assert d.nodes.max() == pytest.approx(40.0, rel=1e-8)  # outliers converge exactly


def test_slq_is_seeded():
    A = sym_with_spectrum(torch.linspace(0, 1, 30, dtype=torch.float64))
    a = slq(lambda v: A @ v, 30, runs=2, steps=10, seed=3)
    b = slq(lambda v: A @ v, 30, runs=2, steps=10, seed=3)
    np.testing.assert_array_equal(a.density, b.density)
    with pytest.raises(ConfigError):
        slq(lambda v: A @ v, 30, runs=0)


def test_gaussian_density():
    grid, dens, sigma = gaussian_density(np.array([0.0, 1.0]), np.array([0.25, 0.75]),
                                         sigma=0.05)
    assert sigma == 0.05
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-12)
    assert dens[np.argmin(abs(grid - 1.0))] == pytest.approx(
        3 * dens[np.argmin(abs(grid))], rel=1e-3)
    with pytest.raises(ConfigError):
        gaussian_density(np.array([0.0]), np.array([1.0]), sigma=-1.0)


def test_matmat_path_gives_the_same_estimates(decaying):
    mv = lambda v: decaying @ v  # noqa: E731
    mm = lambda Z: Z @ decaying  # noqa: E731 - rows times a symmetric matrix
    a = hutchpp(mv, 300, 60, seed=3)
    b = hutchpp(mv, 300, 60, seed=3, matmat=mm, block=7)
    assert b.value == pytest.approx(a.value, rel=1e-12) and b.num_matvecs == 60
    c = hutchinson(mv, 300, 50, seed=3, matmat=mm, block=8)
    assert c.num_matvecs == 50 and c.samples.shape == (50,)
    assert abs(c.value - float(torch.trace(decaying))) < 5 * c.stderr


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_orthonormal_rows_span_the_row_space(dtype):
    from deepscope.linalg.trace import orthonormal_rows
    g = torch.Generator().manual_seed(5)
    S = torch.randn(12, 400, generator=g, dtype=torch.float64)
    S[5] = S[0] - 2 * S[3]  # rank 11
    Q = orthonormal_rows(S.to(dtype)).double()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert Q.shape == (11, 400)
    torch.testing.assert_close(Q @ Q.T, torch.eye(11, dtype=torch.float64), atol=tol, rtol=0)
    # row space of S = row space of Q: projecting S's rows onto Q changes nothing
    torch.testing.assert_close((S @ Q.T) @ Q, S, atol=100 * tol, rtol=0)
    # against the Householder QR's projector on the independent rows
    keep = [i for i in range(12) if i != 5]
    Qr, _ = torch.linalg.qr(S[keep].T)
    torch.testing.assert_close(Q.T @ Q, Qr @ Qr.T, atol=100 * tol, rtol=0)
    assert orthonormal_rows(torch.zeros(4, 30, dtype=dtype)).shape == (0, 30)


def test_hutchpp_on_a_singular_operator_is_exact():
    lam = torch.cat([torch.linspace(1, 4, 6), torch.zeros(24)]).double()
    A = sym_with_spectrum(lam, seed=6)
    est = hutchpp(lambda v: A @ v, 30, 30)  # 10 sketch columns span the rank-6 range
    assert est.value == pytest.approx(float(lam.sum()), abs=1e-9)
    assert est.stderr == pytest.approx(0.0, abs=1e-9)
    assert est.num_matvecs == 10 + 6 + 10
