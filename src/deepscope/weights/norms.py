r"""Norm-based spectral metrics of a weight matrix, from the eigenvalues of :math:`W^\top W`.

Martin & Mahoney, "Predicting trends in the quality of state-of-the-art neural networks without
access to training or testing data", Nature Communications 12 (2021); stable rank: Rudelson &
Vershynin (2007); matrix entropy as in weightwatcher 0.7.7 (``RMT_Util.matrix_entropy``).

With :math:`\lambda_i = s_i^2` (no 1/N) and :math:`\hat\alpha` from the power-law fit:

* ``log_norm``          :math:`\log_{10} \sum_i \lambda_i = \log_{10} \|W\|_F^2`
* ``log_spectral_norm`` :math:`\log_{10} \lambda_{\max} = \log_{10} \|W\|_2^2`
* ``alpha_weighted``    :math:`\hat\alpha \log_{10} \lambda_{\max}` ("alpha-hat")
* ``log_alpha_norm``    :math:`\log_{10} \sum_i \lambda_i^{\hat\alpha}` (all eigenvalues, as
  weightwatcher; computed as a log-sum-exp so it cannot overflow)
* ``stable_rank``       :math:`\sum_i \lambda_i / \lambda_{\max}`
* ``entropy``           :math:`-\sum_i p_i \ln p_i / \ln r`, :math:`p_i = \lambda_i/\sum\lambda
  + 10^{-10}`, :math:`r` = hard rank + :math:`10^{-10}`, the hard rank counting singular values
  :math:`s_i > s_{\max} N \epsilon_{64}` (weightwatcher's ``matrix_rank`` with N the larger
  dimension and float64 machine epsilon)
* ``rank_collapse_fraction`` fraction of eigenvalues that are numerically zero for float32
  weights: :math:`\lambda_i \le \lambda_{\max} \max\bigl((\max(N,M)\,\epsilon_{32})^2,\;
  16\,\epsilon_{32}\bigr)`. The first term is numpy's ``matrix_rank`` rule on singular values
  (:math:`s_i \le s_{\max} \max(N,M)\,\epsilon_{32}`); the second is the noise floor of
  eigenvalues computed in float32 from the Gram matrix :math:`W^\top W` (measured ~1e-7
  :math:`\lambda_{\max}`), which a plain SVD rule would count as non-zero. A healthy square
  Gaussian matrix has ~0.1 % of its eigenvalues below it.

All take 1-D eigenvalues (negative round-off is clipped to 0 by the callers) and return NaN
where the metric is undefined: the zero matrix (:math:`\lambda_{\max} = 0`) and, for the two
alpha metrics, a NaN alpha (a failed fit).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm", "stable_rank",
    "matrix_rank", "entropy", "rank_collapse_fraction",
]

_WW_EPSILON = 1e-10
_EPS32 = float(np.finfo(np.float32).eps)
_EPS64 = float(np.finfo(np.float64).eps)
_NAN = float("nan")


def _ev(evals) -> np.ndarray:
    return np.asarray(evals, dtype=np.float64).ravel()


def _lmax(ev: np.ndarray) -> float:
    return float(ev.max()) if len(ev) else 0.0


def log_norm(evals) -> float:
    """log10 of the sum of eigenvalues (squared Frobenius norm)."""
    s = float(np.sum(_ev(evals)))
    return math.log10(s) if s > 0 else _NAN


def log_spectral_norm(evals) -> float:
    """log10 of the largest eigenvalue (squared spectral norm)."""
    m = _lmax(_ev(evals))
    return math.log10(m) if m > 0 else _NAN


def alpha_weighted(alpha: float, evals) -> float:
    """alpha * log10(lambda_max); NaN when alpha is NaN."""
    return float(alpha) * log_spectral_norm(evals) if np.isfinite(alpha) else _NAN


def log_alpha_norm(alpha: float, evals) -> float:
    """log10 sum_i lambda_i**alpha over all eigenvalues; NaN when alpha is NaN."""
    ev = _ev(evals)
    if not np.isfinite(alpha) or _lmax(ev) <= 0:
        return _NAN
    with np.errstate(divide="ignore"):
        logs = np.log(ev)
    return float(logsumexp(float(alpha) * logs) / math.log(10.0))


def stable_rank(evals) -> float:
    """sum_i lambda_i / lambda_max."""
    ev = _ev(evals)
    m = _lmax(ev)
    return float(np.sum(ev) / m) if m > 0 else _NAN


def matrix_rank(evals, N: int) -> int:
    """Hard rank as weightwatcher counts it: singular values above s_max * N * eps(float64)."""
    sv = np.sqrt(np.clip(_ev(evals), 0.0, None))
    if not len(sv):
        return 0
    return int(np.count_nonzero(sv > sv.max() * N * _EPS64))


def entropy(evals, N: int) -> float:
    """weightwatcher's matrix entropy, normalized by ln(hard rank).

    NaN for a hard rank below 2, where weightwatcher divides by ln(1 + 1e-10) and returns noise.
    """
    ev = np.clip(_ev(evals), 0.0, None)
    total = float(np.sum(ev))
    if total <= 0:
        return _NAN
    rank = matrix_rank(ev, N)
    if rank < 2:
        return _NAN
    p = ev / total + _WW_EPSILON
    return float(-np.sum(p * np.log(p)) / math.log(rank + _WW_EPSILON))


def rank_collapse_fraction(evals, N: int, M: int) -> float:
    """Fraction of numerically zero eigenvalues (module docstring); 1.0 for W = 0."""
    ev = _ev(evals)
    if not len(ev):
        return _NAN
    m = _lmax(ev)
    if m <= 0:
        return 1.0
    tol = m * max((max(N, M) * _EPS32) ** 2, 16.0 * _EPS32)
    return float(np.count_nonzero(ev <= tol) / len(ev))
