"""Phase rules on synthetic spectra with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deepscope.weights.mp import fit_mp
from deepscope.weights.norms import rank_collapse_fraction
from deepscope.weights.phases import PHASES, classify_phase
from deepscope.weights.powerlaw import fit_power_law

N, M = 1000, 500


def _evals(W):
    return np.linalg.svd(W, compute_uv=False) ** 2


def _phase(evals, n=N, m=M):
    fit = fit_power_law(evals)
    phase = classify_phase(fit, fit_mp(evals, n, m), rank_collapse_fraction(evals, n, m))
    assert phase in PHASES
    return phase, fit


def _planted(seed, strengths):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(N, M))
    for s in strengths:
        u, v = rng.normal(size=N), rng.normal(size=M)
        W += s * math.sqrt(N) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    return _evals(W)


def test_gaussian_is_random_like():
    assert _phase(_evals(np.random.default_rng(0).normal(0, 0.02, size=(N, M))))[0] \
        == "random-like"


def test_planted_spikes_are_bulk_plus_spikes():
    phase, fit = _phase(_planted(1, [1.5, 2.0, 2.5, 3.0, 4.0]))
    assert phase == "bulk+spikes"
    assert fit.alpha <= 6     # the alpha rule alone would have said heavy-tailed or bulk-decay


def test_spikes_at_the_edge_bleed_out():
    y = M / N
    assert _phase(_planted(1, [1.3 * y**0.25] * 3))[0] == "bleeding-out"


@pytest.mark.parametrize("alpha", [2.5, 3.0, 3.5])
def test_pareto_spectrum_is_heavy_tailed(alpha):
    rng = np.random.default_rng(int(10 * alpha))
    evals = (1.0 - rng.random(M)) ** (-1.0 / (alpha - 1.0))
    phase, fit = _phase(evals)
    assert phase == "heavy-tailed", fit


def test_steep_tail_is_bulk_decay():
    rng = np.random.default_rng(2)
    evals = (1.0 - rng.random(M)) ** (-1.0 / 4.0)          # alpha = 5
    phase, fit = _phase(evals)
    assert 4 < fit.alpha <= 6 and phase == "bulk-decay"


def test_low_rank_is_rank_collapse():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(N, M // 4)) @ rng.normal(size=(M // 4, M))
    assert _phase(_evals(W))[0] == "rank-collapse"
    assert _phase(np.zeros(M))[0] == "rank-collapse"


def test_orthogonal_is_undetermined_with_failed_fit():
    Qm, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(N, M)))
    phase, fit = _phase(_evals(Qm))
    assert phase == "undetermined"
    assert fit.status == "degenerate" and math.isnan(fit.alpha)


def test_non_finite_is_undetermined():
    evals = _evals(np.random.default_rng(5).normal(size=(N, M)))
    evals[3] = np.nan
    assert _phase(evals)[0] == "undetermined"
