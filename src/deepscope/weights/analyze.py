r"""Per-spectrum HT-SR analysis: one eigenvalue spectrum in, one row of metrics out.

Heavy-Tailed Self-Regularization (Martin & Mahoney, JMLR 2021; Nature Communications 2021).
For the eigenvalues :math:`\lambda_i = s_i(W)^2` of :math:`W^\top W` (one N x M matrix, or
``num_matrices`` pooled slices of that shape) :func:`analyze_spectrum` runs

* the power-law fit of the tail, :math:`p(\lambda) \propto \lambda^{-\alpha}` on
  :math:`\lambda \ge x_{\min}` (:mod:`deepscope.weights.powerlaw`, weightwatcher's default fit
  plus a minimum tail and a fit status), with an optional bootstrap interval for alpha and an
  optional exponentially truncated power law;
* the norm metrics (:mod:`deepscope.weights.norms`);
* the Marchenko-Pastur bulk fit and spike count (:mod:`deepscope.weights.mp`);
* the phase (:mod:`deepscope.weights.phases`).

Columns (:data:`COLUMNS`, a public contract): ``num_evals, lambda_max, alpha, alpha_ci_low,
alpha_ci_high, xmin, ks_distance, num_tail, fit_status, alpha_weighted, log_norm,
log_spectral_norm, log_alpha_norm, stable_rank, entropy, mp_sigma, mp_bulk_max, num_spikes,
mp_softrank, rank_collapse_fraction, phase``, then, with ``truncated=True`` only,
:data:`TRUNCATED_COLUMNS` (``tpl_alpha, tpl_lambda, tpl_loglik_ratio, tpl_p_value``).

NaN policy. Non-finite eigenvalues: ``fit_status = "not_finite"``, ``phase = "undetermined"``,
every numeric column NaN except ``num_evals``; no exception. A failed power-law fit (any other
status): ``alpha``, ``alpha_ci_low/high``, ``xmin``, ``ks_distance``, ``num_tail`` and the
alpha-dependent ``alpha_weighted`` and ``log_alpha_norm`` are NaN (weightwatcher reports
alpha = -1 and carries it into these); the ``tpl_*`` columns too. A failed MP fit: ``mp_sigma``,
``mp_bulk_max``, ``num_spikes`` and ``mp_softrank`` are NaN. The norm metrics are NaN for the
zero matrix. Eigenvalues in [-1e-5 lambda_max, 0) are round-off and taken as 0; more negative
ones raise :class:`~deepscope.errors.ConfigError`.
"""
from __future__ import annotations

import numpy as np

from deepscope.errors import ConfigError, ShapeError
from deepscope.weights import norms
from deepscope.weights.mp import DEFAULT_TW_MARGIN, fit_mp
from deepscope.weights.phases import classify_phase
from deepscope.weights.powerlaw import (DEFAULT_MIN_TAIL, WW_EVALS_THRESH, PowerLawFit,
                                        bootstrap_alpha_ci, fit_power_law,
                                        fit_truncated_power_law)

__all__ = ["analyze_spectrum", "COLUMNS", "TRUNCATED_COLUMNS"]

COLUMNS = (
    "num_evals", "lambda_max", "alpha", "alpha_ci_low", "alpha_ci_high", "xmin", "ks_distance",
    "num_tail", "fit_status", "alpha_weighted", "log_norm", "log_spectral_norm",
    "log_alpha_norm", "stable_rank", "entropy", "mp_sigma", "mp_bulk_max", "num_spikes",
    "mp_softrank", "rank_collapse_fraction", "phase",
)
TRUNCATED_COLUMNS = ("tpl_alpha", "tpl_lambda", "tpl_loglik_ratio", "tpl_p_value")
_NEG_TOL = 1e-5
_NAN = float("nan")


def _clean(evals) -> np.ndarray:
    arr = np.asarray(evals, dtype=np.float64)
    if arr.ndim != 1:
        raise ShapeError(f"eigenvalues must be a 1-D array, got shape {arr.shape}")
    if len(arr) and np.all(np.isfinite(arr)):
        floor = -_NEG_TOL * max(float(np.max(np.abs(arr))), 0.0)
        if arr.min() < floor:
            raise ConfigError("eigenvalues of W^T W must be >= 0, got minimum "
                              f"{arr.min():.6g} (largest magnitude {np.max(np.abs(arr)):.6g})")
        arr = np.clip(arr, 0.0, None)
    return arr


def _not_finite_row(n: int, truncated: bool) -> dict:
    row = {c: _NAN for c in COLUMNS}
    row.update(num_evals=n, fit_status="not_finite", phase="undetermined")
    if truncated:
        row.update({c: _NAN for c in TRUNCATED_COLUMNS})
    return row


def analyze_spectrum(evals, N: int, M: int, *, num_matrices: int = 1,
                     min_tail: int = DEFAULT_MIN_TAIL, bootstrap: int = 0, seed: int = 0,
                     level: float = 0.9, truncated: bool = False,
                     convention: str = "weightwatcher", thresh: float = WW_EVALS_THRESH,
                     tw_margin: float = DEFAULT_TW_MARGIN) -> dict:
    """Analyze one spectrum; returns a dict with exactly :data:`COLUMNS` (+ the ``tpl_*``
    columns when ``truncated``), in that order.

    ``evals``: the ``num_matrices * min(N, M)`` eigenvalues of :math:`W^\\top W` (any order).
    ``bootstrap``: number of resamples for the ``level`` interval of alpha (0 = no interval,
    the ``alpha_ci_*`` columns are NaN), seeded by ``seed``. ``min_tail``, ``convention`` and
    ``thresh`` go to :func:`~deepscope.weights.powerlaw.fit_power_law` (``min_tail=2`` gives
    weightwatcher's numbers), ``tw_margin`` to :func:`~deepscope.weights.mp.fit_mp`.
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) \
            or bootstrap < 0:
        raise ConfigError(f"bootstrap must be an integer >= 0, got {bootstrap!r}")
    arr = _clean(evals)
    mp = fit_mp(arr, N, M, num_matrices=num_matrices, tw_margin=tw_margin)
    fit = fit_power_law(arr, min_tail=min_tail, convention=convention, thresh=thresh)
    n = len(arr)
    if fit.status == "not_finite":
        return _not_finite_row(n, truncated)
    N, M = mp.N, mp.M
    rcf = norms.rank_collapse_fraction(arr, N, M)
    lo = hi = _NAN
    if fit.ok and bootstrap:
        lo, hi = bootstrap_alpha_ci(arr, n_boot=int(bootstrap), level=level, seed=seed,
                                    min_tail=min_tail, convention=convention, thresh=thresh)
    row = {
        "num_evals": n,
        "lambda_max": float(arr.max()) if n else _NAN,
        "alpha": fit.alpha,
        "alpha_ci_low": lo,
        "alpha_ci_high": hi,
        "xmin": fit.xmin,
        "ks_distance": fit.ks_distance,
        "num_tail": fit.num_tail if fit.ok else _NAN,
        "fit_status": fit.status,
        "alpha_weighted": norms.alpha_weighted(fit.alpha, arr),
        "log_norm": norms.log_norm(arr),
        "log_spectral_norm": norms.log_spectral_norm(arr),
        "log_alpha_norm": norms.log_alpha_norm(fit.alpha, arr),
        "stable_rank": norms.stable_rank(arr),
        "entropy": norms.entropy(arr, N),
        "mp_sigma": mp.sigma,
        "mp_bulk_max": mp.bulk_max,
        "num_spikes": mp.num_spikes if mp.ok else _NAN,
        "mp_softrank": mp.softrank,
        "rank_collapse_fraction": rcf,
        "phase": classify_phase(fit, mp, rcf),
    }
    if truncated:
        row.update(_truncated_columns(arr, fit, min_tail, thresh))
    return row


def _truncated_columns(arr: np.ndarray, fit: PowerLawFit, min_tail: int, thresh: float) -> dict:
    if not fit.ok:
        return {c: _NAN for c in TRUNCATED_COLUMNS}
    tpl = fit_truncated_power_law(arr, fit.xmin, min_tail=min_tail, thresh=thresh)
    return {"tpl_alpha": tpl.alpha, "tpl_lambda": tpl.lam, "tpl_loglik_ratio": tpl.loglik_ratio,
            "tpl_p_value": tpl.p_value}

