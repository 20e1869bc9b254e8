"""Marchenko-Pastur: closed forms against quadrature, Gaussian matrices, planted BBP spikes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deepscope.errors import ConfigError, ShapeError
from deepscope.weights.mp import (fit_mp, mp_cdf, mp_density, mp_edges, mp_quantile,
                                  tracy_widom_scale)
from reference.ref_htsr import ref_mp_cdf


def _evals(W):
    return np.linalg.svd(W, compute_uv=False) ** 2


@pytest.mark.parametrize("Q,sigma", [(1.0, 1.0), (1.5, 0.3), (4.0, 2.0), (10.0, 1.0)])
def test_cdf_quantile_density_are_consistent(Q, sigma):
    lo, hi = mp_edges(Q, sigma)
    assert (lo, hi) == pytest.approx((sigma**2 * (1 - Q**-0.5) ** 2, sigma**2 * (1 + Q**-0.5) ** 2))
    x = np.linspace(lo, hi, 11)[1:-1]
    assert mp_cdf(x, Q, sigma) == pytest.approx(ref_mp_cdf(x, Q, sigma), abs=1e-9)
    p = np.linspace(0.0, 1.0, 21)
    assert mp_cdf(mp_quantile(p, Q, sigma), Q, sigma) == pytest.approx(p, abs=1e-12)
    grid = np.linspace(lo, hi, 200_001)
    if Q > 1:  # the Q = 1 density has an integrable 1/sqrt(x) singularity at 0
        assert np.trapezoid(mp_density(grid, Q, sigma), grid) == pytest.approx(1.0, abs=1e-3)
    assert mp_density([lo - 1e-3, hi + 1e-3], Q, sigma) == pytest.approx([0.0, 0.0])
    with pytest.raises(ConfigError):
        mp_edges(0.5)


def test_tracy_widom_scale_formula():
    Q, M, sigma = 2.5, 300, 0.7
    lam_plus = mp_edges(Q, sigma)[1]
    assert tracy_widom_scale(Q, M, sigma) == pytest.approx(
        sigma ** (2 / 3) * Q**-0.5 * lam_plus ** (2 / 3) * M ** (-2 / 3), rel=1e-12)


@pytest.mark.parametrize("N,M", [(1000, 500), (500, 500), (2000, 200)])
def test_gaussian_matrix_follows_mp(N, M):
    rng = np.random.default_rng(N + M)
    sd = 0.1
    evals = _evals(rng.normal(0.0, sd, size=(N, M)))
    fit = fit_mp(evals, N, M)
    assert fit.ok
    assert fit.sigma == pytest.approx(sd, rel=0.02)
    assert fit.num_spikes == 0
    assert fit.bulk_max == pytest.approx(N * fit.sigma**2 * (1 + (M / N) ** 0.5) ** 2)
    assert fit.softrank == pytest.approx(1.0, abs=0.05)
    assert fit.ks_distance < 0.03
    # argument order does not matter; the larger dimension is N
    assert fit_mp(evals, M, N).sigma == fit.sigma


def test_pooled_slices():
    rng = np.random.default_rng(4)
    W = rng.normal(0.0, 0.05, size=(9, 128, 64))      # e.g. the 3x3 slices of a conv kernel
    evals = np.concatenate([_evals(w) for w in W])
    fit = fit_mp(evals, 128, 64, num_matrices=9)
    assert fit.sigma == pytest.approx(0.05, rel=0.03)
    assert fit.num_spikes == 0
    with pytest.raises(ShapeError, match="eigenvalues"):
        fit_mp(evals, 128, 64)


def _planted(rng, N, M, strengths):
    """G + sum_i theta_i u_i v_i^T; normalized singular value s of each planted direction."""
    W = rng.normal(size=(N, M))
    for s in strengths:
        u = rng.normal(size=N)
        v = rng.normal(size=M)
        W += s * math.sqrt(N) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    return _evals(W)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_planted_spikes_above_bbp_are_counted(k):
    N, M = 1000, 400
    rng = np.random.default_rng(k)
    y = M / N
    strengths = np.linspace(2.0, 4.0, k) * y**0.25   # BBP threshold: s > y^(1/4)
    fit = fit_mp(_planted(rng, N, M, strengths), N, M)
    assert fit.num_spikes == k
    assert fit.num_separated == k
    assert fit.sigma == pytest.approx(1.0, rel=0.02)
    assert fit.softrank < 1.0


def test_statuses_and_errors():
    evals = np.r_[np.nan, np.ones(9)]
    assert fit_mp(evals, 20, 10).status == "not_finite"
    assert fit_mp(np.zeros(10), 20, 10).status == "degenerate"
    assert math.isnan(fit_mp(np.zeros(10), 20, 10).sigma)
    with pytest.raises(ShapeError):
        fit_mp(np.ones(10), 20, 0)
    with pytest.raises(ShapeError):
        fit_mp(np.ones((2, 5)), 20, 10)
