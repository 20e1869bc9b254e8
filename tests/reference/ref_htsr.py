"""Slow, obvious reference implementations for the HT-SR spectrum analysis tests.

One Python loop per candidate xmin, float64, no cleverness: the tests compare the vectorized
code in ``deepscope.weights`` against these.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import integrate


def ref_power_law(evals, *, min_tail=2, convention="weightwatcher", thresh=1e-5,
                  flat_tol=1e-5):
    """Exhaustive Clauset fit; returns (alpha, xmin, D, n_tail) or None when nothing fits."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > thresh]
    n = len(x)
    small = convention == "weightwatcher" and n < 20
    best = None
    for i in range(n - 1):
        if convention == "clauset" and i > 0 and x[i] == x[i - 1]:
            continue
        tail = x[i:]
        nt = len(tail)
        if nt < min_tail or math.log(x[-1] / x[i]) <= flat_tol:
            continue
        s = float(np.sum(np.log(tail / x[i])))
        if small and (nt < 8 or s <= 1e-12):
            continue
        alpha = 1.0 + (nt - 1 if small else nt) / s
        F = 1.0 - (tail / x[i]) ** (1.0 - alpha)
        k = np.arange(nt)
        if convention == "clauset":
            D = float(np.max(np.maximum(F - k / nt, (k + 1) / nt - F)))
        else:
            D = float(np.max(np.abs(F - k / nt)))
        if best is None or D < best[2]:
            best = (alpha, x[i], D, nt)
    if best is None and small and n >= min_tail and math.log(x[-1] / x[0]) > flat_tol:
        s = float(np.sum(np.log(x / x[0])))
        alpha = 1.0 + (n - 1) / s
        F = 1.0 - (x / x[0]) ** (1.0 - alpha)
        best = (alpha, x[0], float(np.max(np.abs(F - np.arange(n) / n))), n)
    return best


def ref_mp_cdf(x, Q, sigma=1.0):
    """Marchenko-Pastur CDF by numerical quadrature of the density."""
    y = 1.0 / Q
    s2 = sigma * sigma
    a, b = s2 * (1 - math.sqrt(y)) ** 2, s2 * (1 + math.sqrt(y)) ** 2

    def f(t):
        return math.sqrt(max((b - t) * (t - a), 0.0)) / (2 * math.pi * s2 * y * t)

    out = []
    for v in np.atleast_1d(x):
        if v <= a:
            out.append(0.0)
        elif v >= b:
            out.append(1.0)
        else:
            out.append(integrate.quad(f, a, v, limit=200)[0])
    return np.array(out)


def ref_entropy(evals, N):
    """weightwatcher's matrix_entropy, written out (rank from singular values, float64 eps)."""
    sv = np.sqrt(np.asarray(evals, dtype=np.float64))
    tol = sv.max() * N * np.finfo(np.float64).eps
    rank = np.count_nonzero(sv > tol) + 1e-10
    p = sv * sv / np.sum(sv * sv) + 1e-10
    return float(-np.sum(p * np.log(p)) / np.log(rank))
