"""Norm metrics against weightwatcher's own functions and hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deepscope.weights import norms
from reference.ref_htsr import ref_entropy


@pytest.fixture(scope="module")
def spectrum():
    rng = np.random.default_rng(0)
    W = rng.standard_t(4.0, size=(250, 120)) * 0.05
    return np.linalg.svd(W, compute_uv=False) ** 2, 250


def test_against_weightwatcher_functions(spectrum):
    RMT = pytest.importorskip("weightwatcher.RMT_Util")
    evals, N = spectrum
    sv = np.sqrt(evals)
    assert norms.entropy(evals, N) == pytest.approx(RMT.matrix_entropy(sv, N), rel=1e-10)
    assert norms.matrix_rank(evals, N) == RMT.matrix_rank(sv, N)
    assert norms.stable_rank(evals) == pytest.approx(RMT.stable_rank(evals), rel=1e-12)
    assert norms.entropy(evals, N) == pytest.approx(ref_entropy(evals, N), rel=1e-12)


def test_hand_formulas(spectrum):
    evals, _ = spectrum
    alpha = 3.7
    assert norms.log_norm(evals) == pytest.approx(math.log10(evals.sum()), rel=1e-12)
    assert norms.log_spectral_norm(evals) == pytest.approx(math.log10(evals.max()), rel=1e-12)
    assert norms.alpha_weighted(alpha, evals) == pytest.approx(
        alpha * math.log10(evals.max()), rel=1e-12)
    # weightwatcher: np.log10(np.sum([ev**alpha for ev in evals]))
    assert norms.log_alpha_norm(alpha, evals) == pytest.approx(
        np.log10(np.sum([ev**alpha for ev in evals])), rel=1e-10)
    big = evals * 1e30                                   # the log-sum-exp cannot overflow
    assert norms.log_alpha_norm(12.0, big) == pytest.approx(
        norms.log_alpha_norm(12.0, evals) + 360.0, rel=1e-12)


def test_undefined_cases_are_nan():
    ev = np.array([4.0, 2.0, 1.0])
    assert math.isnan(norms.alpha_weighted(float("nan"), ev))
    assert math.isnan(norms.log_alpha_norm(float("nan"), ev))
    zero = np.zeros(5)
    for f in (norms.log_norm, norms.log_spectral_norm, norms.stable_rank):
        assert math.isnan(f(zero))
    assert math.isnan(norms.entropy(zero, 10))
    assert math.isnan(norms.entropy(np.r_[1.0, np.zeros(9)], 10))   # hard rank 1
    assert norms.rank_collapse_fraction(zero, 10, 5) == 1.0


def test_rank_collapse_fraction():
    rng = np.random.default_rng(1)
    N, M, r = 200, 100, 25
    W = (rng.normal(size=(N, r)) @ rng.normal(size=(r, M))).astype(np.float32)
    evals = np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2
    assert norms.rank_collapse_fraction(evals, N, M) == pytest.approx((M - r) / M)
    full = np.linalg.svd(rng.normal(size=(N, M)), compute_uv=False) ** 2
    assert norms.rank_collapse_fraction(full, N, M) == 0.0
    # float32 eigenvalues of the Gram matrix: the zeros come out as ~1e-7 lambda_max noise
    torch = pytest.importorskip("torch")
    Wt = torch.from_numpy(rng.normal(size=(1000, 10)) @ rng.normal(size=(10, 100))).float()
    gram = torch.linalg.eigvalsh(Wt.T @ Wt).clamp_min(0).double().numpy()
    assert norms.rank_collapse_fraction(gram, 1000, 100) == pytest.approx(0.9)
