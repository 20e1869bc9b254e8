r"""Power-law fit of the tail of an eigenvalue spectrum.

Method: Clauset, Shalizi & Newman, "Power-law distributions in empirical data", SIAM Review 51
(2009), as used for weight spectra by Martin & Mahoney, "Implicit Self-Regularization in Deep
Neural Networks" (JMLR 2021) and their ``weightwatcher`` tool.

For the ascending eigenvalues :math:`x_0 \le \dots \le x_{n-1}` and every candidate
:math:`x_{\min} = x_i` with tail size :math:`n_i = n - i`:

.. math::

    \hat\alpha_i = 1 + \frac{n_i}{\sum_{j \ge i} \ln(x_j / x_i)}, \qquad
    D_i = \max_{0 \le k < n_i} \Bigl| 1 - (x_{i+k}/x_i)^{1-\hat\alpha_i} - \frac{k}{n_i} \Bigr|,

the chosen :math:`x_{\min}` minimizes :math:`D_i` and :math:`\sigma = (\hat\alpha-1)/\sqrt{n_i}`.

``convention="weightwatcher"`` (default) reproduces weightwatcher 0.7.7's default fit
(``WWFit`` in ``WW_powerlaw.py``, reached from ``analyze()`` with ``pl_package="ww"``,
``fix_fingers=False``, ``xmax=None``) exactly:

* eigenvalues :math:`\le 10^{-5}` (``EVALS_THRESH``, an absolute threshold) are dropped first;
* candidates are *positions* in the sorted array, every one but the last, so a repeated value is
  a candidate once per copy, its tail starting at that copy;
* the KS distance compares the model CDF with the one-sided empirical CDF ``k / n_i`` only;
* ties in :math:`D` go to the smallest :math:`x_{\min}` (``np.argmin``);
* with fewer than 20 eigenvalues it switches to a small-sample rule: bias-corrected
  :math:`\hat\alpha = 1 + (n_i - 1)/\sum\ln(x_j/x_i)`, only tails of at least 8, still the
  minimum :math:`D_i` (its ``fit_powerlaw_smallN`` ranks by :math:`D_i - 0.868/\sqrt{n_i}`, but
  ``WWFit.__init__`` then overrides that choice with ``argmin(Ds)``), and the whole spectrum as
  the only candidate when no tail qualifies.

``convention="clauset"`` is the textbook variant: distinct values as candidates and the
two-sided KS distance :math:`\max_k \max(F - k/n_i, (k+1)/n_i - F)`.

What deepscope adds (weightwatcher has none of it): candidates whose tail holds fewer than
``min_tail`` eigenvalues are not eligible (default 10: at :math:`n=10` the standard error
:math:`\sigma` is already ~30 % of :math:`\hat\alpha-1`; ``min_tail=2`` restores weightwatcher's
behaviour), tails whose log-range :math:`\ln(x_{\max}/x_i)` is below :data:`DEGENERATE_LOG_RANGE`
(flat spectra: orthogonal matrices, float32 round-off) are not eligible either, and every fit
carries a ``status``; a failed fit has ``alpha = NaN``, never an absurd number.

Speed: all candidates (and, for the bootstrap, all resamples) are handled at once, with no
Python loop over candidates. :math:`\hat\alpha_i` for every :math:`i` comes from suffix sums of
the log-eigenvalues. :math:`D_i` is found by branch and bound over rank intervals of each tail:
between two evaluated offsets both CDFs are monotone, which bounds :math:`|F - k/n_i|` inside;
a few candidates per spectrum are evaluated exactly to get a tight threshold, candidates whose
lower bound exceeds it are dropped, and intervals that cannot raise their candidate's maximum
are dropped. The result is identical to the exhaustive :math:`O(n^2)` search (tested against it
and against weightwatcher), at a fraction of its cost: real spectra, whose bulk is far from a
power law, prune almost everything after the first pass.

Exponentially truncated power law: :func:`fit_truncated_power_law` (its own docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepscope.errors import ConfigError, ShapeError, unknown_name

__all__ = [
    "PowerLawFit", "fit_power_law", "bootstrap_alpha_ci",
    "TruncatedPowerLawFit", "fit_truncated_power_law",
    "DEFAULT_MIN_TAIL", "WW_EVALS_THRESH", "DEGENERATE_LOG_RANGE", "FIT_STATUSES", "CONVENTIONS",
]

WW_EVALS_THRESH = 1e-5
"""weightwatcher's ``EVALS_THRESH``: eigenvalues at or below it are dropped before fitting."""
DEFAULT_MIN_TAIL = 10
"""Smallest tail (number of eigenvalues >= xmin) a candidate xmin may have."""
DEGENERATE_LOG_RANGE = 1e-5
"""A tail with ln(x_max / xmin) below this is flat (float32 SVD noise is ~1e-6 relative)."""
FIT_STATUSES = ("ok", "too_few_evals", "tail_too_small", "degenerate", "not_finite")
CONVENTIONS = ("weightwatcher", "clauset")

_WW_SMALL_N = 20           # weightwatcher's SMALL_N_CUTOFF
_WW_SMALL_N_MIN_TAIL = 8   # its k_min
_BLOCK = 1 << 21           # candidates x offsets evaluated per block in the bootstrap
_SLACK = 1e-12             # guards the bounds against round-off


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`; on failure every float is NaN and ``num_tail`` is 0."""

    alpha: float
    xmin: float
    ks_distance: float
    num_tail: int
    sigma: float
    status: str
    num_evals: int = 0  # eigenvalues the fit saw (after the threshold and xmax)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, status: str, num_evals: int = 0) -> PowerLawFit:
        nan = float("nan")
        return cls(nan, nan, nan, 0, nan, status, num_evals)


# ----------------------------------------------------------------------------- validation


def _as_evals(evals) -> np.ndarray:
    arr = np.asarray(evals, dtype=np.float64)
    if arr.ndim != 1:
        raise ShapeError(f"eigenvalues must be a 1-D array, got shape {arr.shape}")
    return arr


def _check_options(min_tail: int, convention: str) -> int:
    if convention not in CONVENTIONS:
        raise unknown_name("power-law convention", convention, CONVENTIONS)
    if isinstance(min_tail, bool) or not isinstance(min_tail, (int, np.integer)) or min_tail < 2:
        raise ConfigError(f"min_tail must be an integer >= 2, got {min_tail!r}")
    return int(min_tail)


def _positive_sorted(arr: np.ndarray, thresh: float, xmax: float | None) -> np.ndarray:
    x = arr[arr > thresh]
    if xmax is not None:
        x = x[x <= xmax]
    return np.sort(x)


# ----------------------------------------------------------------------------- KS machinery


class _Cands:
    """Flat description of candidates: row, start index, tail size, alpha - 1."""

    def __init__(self, Lf, n, rows, starts, beta, two_sided):
        self.Lf, self.n, self.two_sided = Lf, n, two_sided
        self.rows, self.starts, self.beta = rows, starts, beta
        self.ntail = (n - starts).astype(float)
        self.base = rows * n + starts

    def terms(self, c, k):
        """Model CDF F, and the KS term d, at tail offsets ``k`` of candidates ``c``."""
        base = np.take(self.base, c)
        nt = np.take(self.ntail, c)
        Lf = self.Lf
        F = -np.expm1(-np.take(self.beta, c) * (np.take(Lf, base + k) - np.take(Lf, base)))
        e = k / nt
        d = np.maximum(F - e, e + 1.0 / nt - F) if self.two_sided else np.abs(F - e)
        return F, d

    def bound(self, c, klo, khi, Flo, Fhi):
        """Upper bound of d over the offsets strictly between klo and khi (F is monotone)."""
        nt = np.take(self.ntail, c)
        if self.two_sided:
            return np.maximum(Fhi - (klo + 1) / nt, khi / nt - Flo) + _SLACK
        return np.maximum(Fhi - (klo + 1) / nt, (khi - 1) / nt - Flo) + _SLACK


def _raise_max(target, ids, values):
    """target[i] = max(target[i], max(values[ids == i])) for ``ids`` sorted ascending."""
    if len(ids):
        first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        u = ids[first]
        target[u] = np.maximum(target[u], np.maximum.reduceat(values, first))


def _row_min(values, rows, B):
    """Per-row minimum of ``values`` for ``rows`` sorted ascending (+inf for empty rows)."""
    out = np.full(B, np.inf)
    if len(rows):
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        out[rows[first]] = np.minimum.reduceat(values, first)
    return out


def _ks_exact(cs: _Cands, cands: np.ndarray) -> np.ndarray:
    """Exact KS distance of candidates ``cands`` (every offset of every tail)."""
    le = (cs.n - cs.starts[cands]).astype(np.int64)
    seg = np.cumsum(le) - le
    q = np.repeat(np.arange(len(cands)), le)
    k = np.arange(int(le.sum())) - seg[q]
    return np.maximum.reduceat(cs.terms(cands[q], k)[1], seg)


def _ks_search(cs: _Cands, B: int, k0: int = 16, m: int = 2, n_seed: int = 4) -> np.ndarray:
    """Exact KS distance of every candidate that can be its row's minimum; +inf for the rest.

    Branch and bound over rank intervals of each tail. A candidate's lower bound ``lb`` is the
    max of d over the offsets evaluated so far; an interval's upper bound follows from the
    monotone CDFs at its two ends, so ``ub`` = max(lb, bounds of its open intervals). After a
    first pass of ``k0`` offsets per tail, the ``n_seed`` candidates of each row with the
    smallest ``ub`` are evaluated exactly, which makes the row threshold (smallest ``ub``)
    tight at once. Then every open interval gets ``m`` more offsets per round; candidates with
    ``lb`` above their row threshold are dropped, and so are intervals that cannot raise their
    candidate's ``lb``. Candidates left when no interval is open have ``D = lb`` exactly.
    Arrays stay sorted by candidate id (hence by row), so group maxima are ``reduceat`` calls.
    """
    C = len(cs.rows)
    cid = np.arange(C)
    last = (cs.n - cs.starts).astype(np.int64) - 1
    Fl, lb = cs.terms(cid, last)                  # d at offset 0 is exactly 0
    alive = np.ones(C, dtype=bool)
    done = np.zeros(C, dtype=bool)                # resolved exactly (seeds)
    thr = np.full(B, np.inf)
    sel = np.flatnonzero(last >= 2)
    zero = np.zeros(len(sel), dtype=np.int64)
    c, klo, khi, Flo, Fhi = cid[sel], zero, last[sel], zero.astype(float), Fl[sel]
    step, seeded = k0, False
    while len(c):
        span = khi - klo
        long = span - 1 > step
        sh, lg = np.flatnonzero(~long), np.flatnonzero(long)
        dmax = np.zeros(len(c))
        if len(sh):                                # short intervals: every interior offset
            k = klo[sh, None] + np.arange(1, int(span[sh].max()))
            k = np.where(k < khi[sh, None], k, klo[sh, None])
            dmax[sh] = cs.terms(c[sh, None], k)[1].max(axis=1)
        cl = c[lg]
        K = klo[lg, None] + (np.arange(step + 2) * span[lg, None]) // (step + 1)
        FF = np.empty(K.shape)
        FF[:, 0], FF[:, -1] = Flo[lg], Fhi[lg]
        FF[:, 1:-1], d = cs.terms(cl[:, None], K[:, 1:-1])
        if len(lg):
            dmax[lg] = d.max(axis=1)
        _raise_max(lb, c, dmax)
        bnd = cs.bound(cl[:, None], K[:, :-1], K[:, 1:], FF[:, :-1], FF[:, 1:])
        bnd[(K[:, 1:] - K[:, :-1]) < 2] = -np.inf  # no interior offset
        ub = lb.copy()
        if len(lg):
            _raise_max(ub, cl, bnd.max(axis=1))
        ub[done] = lb[done]
        if not seeded:                             # seed the thresholds with exact fits
            order = np.lexsort((ub, cs.rows))
            rank = np.arange(C) - np.searchsorted(cs.rows[order], cs.rows[order])
            seeds = np.sort(order[rank < n_seed])
            lb[seeds] = ub[seeds] = _ks_exact(cs, seeds)
            done[seeds] = True
            step, seeded = m, True
        thr = np.minimum(thr, _row_min(np.where(alive, ub, np.inf), cs.rows, B))
        alive &= lb <= thr[cs.rows] + _SLACK
        open_ = (bnd > lb[cl, None]) & (alive & ~done)[cl, None]
        q, s = np.nonzero(open_)
        c, klo, khi, Flo, Fhi = cl[q], K[q, s], K[q, s + 1], FF[q, s], FF[q, s + 1]
    return np.where(alive, lb, np.inf)


def _select(x: np.ndarray, min_tail: int, convention: str):
    """Fit every row of ``x`` (B, n), each sorted ascending and positive.

    Returns (index, alpha, D, n_tail) per row; index is -1 where no candidate is eligible.
    """
    B, n = x.shape
    L = np.log(x)
    Lc = L - L[:, -1:]                                   # <= 0, tames cancellation
    ntail = (n - np.arange(n)).astype(float)
    S = np.cumsum(Lc[:, ::-1], axis=1)[:, ::-1] - ntail * Lc    # sum_{j>=i} ln(x_j/x_i)
    small = convention == "weightwatcher" and n < _WW_SMALL_N
    flat = -Lc > DEGENERATE_LOG_RANGE
    elig = flat & (ntail >= min_tail)
    elig[:, -1] = False
    if convention == "clauset":
        elig[:, 1:] &= x[:, 1:] != x[:, :-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + (ntail - 1.0 if small else ntail) / S
    objective = np.full((B, n), np.inf)
    if small:
        strict = elig & (ntail >= _WW_SMALL_N_MIN_TAIL) & (S > 1e-12)
        # weightwatcher falls back to the whole spectrum when no candidate qualifies
        fallback = ~strict.any(axis=1) & elig[:, 0]
        strict[fallback, 0] = True
        elig = strict
    rows, starts = np.nonzero(elig)
    beta = alpha[rows, starts] - 1.0
    Lf = Lc.ravel()
    two_sided = convention == "clauset"
    D = _ks_search(_Cands(Lf, n, rows, starts, beta, two_sided), B)
    objective[rows, starts] = D
    Dfull = np.full((B, n), np.nan)
    Dfull[rows, starts] = D
    best = np.argmin(objective, axis=1)
    found = elig.any(axis=1)
    r = np.arange(B)
    idx = np.where(found, best, -1)
    return (idx, np.where(found, alpha[r, best], np.nan), np.where(found, Dfull[r, best], np.nan),
            np.where(found, ntail[best], 0).astype(int))


# ----------------------------------------------------------------------------- public API


def _fixed_xmin_fit(x: np.ndarray, xmin: float, min_tail: int, convention: str) -> PowerLawFit:
    tail = x[x >= xmin]
    n = len(tail)
    if n < min_tail:
        return PowerLawFit.failed("tail_too_small", len(x))
    u = np.log(tail / xmin)
    if u[-1] <= DEGENERATE_LOG_RANGE:
        return PowerLawFit.failed("degenerate", len(x))
    alpha = 1.0 + n / u.sum()
    k = np.arange(n)
    F = -np.expm1(-(alpha - 1.0) * u)
    e = k / n
    d = np.maximum(F - e, e + 1.0 / n - F) if convention == "clauset" else np.abs(F - e)
    return PowerLawFit(float(alpha), float(xmin), float(d.max()), n,
                       float((alpha - 1.0) / math.sqrt(n)), "ok", len(x))


def fit_power_law(evals, *, xmin: float | None = None, xmax: float | None = None,
                  min_tail: int = DEFAULT_MIN_TAIL, convention: str = "weightwatcher",
                  thresh: float = WW_EVALS_THRESH) -> PowerLawFit:
    """Fit a power law :math:`p(x) \\propto x^{-\\alpha}` to the tail of ``evals``.

    ``evals``: 1-D eigenvalues (any order). ``xmin=None`` selects :math:`x_{\\min}` by minimum KS
    distance; a number fixes it (tail = eigenvalues >= xmin; weightwatcher instead treats a given
    xmin as the lower end of its search). ``xmax`` drops eigenvalues above it before fitting (the
    likelihood is not renormalized, as in weightwatcher). ``thresh`` drops eigenvalues at or below
    it (weightwatcher's absolute 1e-5). Status: ``not_finite`` (NaN/Inf in ``evals``),
    ``too_few_evals`` (fewer than ``min_tail`` eigenvalues above ``thresh``), ``tail_too_small``
    (a fixed ``xmin`` leaves fewer than ``min_tail``), ``degenerate`` (no tail with spread), ``ok``.
    """
    min_tail = _check_options(min_tail, convention)
    arr = _as_evals(evals)
    if not np.all(np.isfinite(arr)):
        return PowerLawFit.failed("not_finite", len(arr))
    x = _positive_sorted(arr, thresh, xmax)
    if xmin is not None:
        if not (np.isfinite(xmin) and xmin > 0):
            raise ConfigError(f"xmin must be a positive number or None, got {xmin!r}")
        return _fixed_xmin_fit(x, float(xmin), min_tail, convention)
    if len(x) < min_tail:
        return PowerLawFit.failed("too_few_evals", len(x))
    idx, alpha, D, ntail = _select(x[None, :], min_tail, convention)
    if idx[0] < 0:
        return PowerLawFit.failed("degenerate", len(x))
    a, nt = float(alpha[0]), int(ntail[0])
    return PowerLawFit(a, float(x[idx[0]]), float(D[0]), nt, (a - 1.0) / math.sqrt(nt), "ok",
                       len(x))


def bootstrap_alpha_ci(evals, *, n_boot: int = 200, level: float = 0.9, seed: int = 0,
                       min_tail: int = DEFAULT_MIN_TAIL, convention: str = "weightwatcher",
                       thresh: float = WW_EVALS_THRESH,
                       xmax: float | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval for alpha, re-selecting xmin on every resample.

    The eigenvalues kept by the fit (above ``thresh``, below ``xmax``) are resampled with
    replacement ``n_boot`` times (``numpy.random.default_rng(seed)``), each resample is fitted
    exactly as :func:`fit_power_law` would, and the ``(1-level)/2`` and ``(1+level)/2`` quantiles
    of the alphas are returned. ``(nan, nan)`` when the data cannot be fitted or fewer than half of
    the resamples give a fit.
    """
    min_tail = _check_options(min_tail, convention)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ConfigError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    arr = _as_evals(evals)
    nan = (float("nan"), float("nan"))
    if not np.all(np.isfinite(arr)):
        return nan
    x = _positive_sorted(arr, thresh, xmax)
    n = len(x)
    if n < min_tail:
        return nan
    rng = np.random.default_rng(seed)
    samples = np.sort(x[rng.integers(0, n, size=(int(n_boot), n))], axis=1)
    rows_per_block = max(1, _BLOCK // (n * 32))
    alphas = np.concatenate([_select(samples[a:a + rows_per_block], min_tail, convention)[1]
                             for a in range(0, int(n_boot), rows_per_block)])
    alphas = alphas[np.isfinite(alphas)]
    if len(alphas) < n_boot / 2:
        return nan
    lo, hi = np.quantile(alphas, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- truncated PL


@dataclass(frozen=True)
class TruncatedPowerLawFit:
    """Result of :func:`fit_truncated_power_law` (``lam`` in units of 1 / eigenvalue)."""

    alpha: float
    lam: float
    xmin: float
    num_tail: int
    loglik: float
    loglik_power_law: float
    loglik_ratio: float   # loglik - loglik_power_law >= 0: evidence for the cutoff
    p_value: float        # Wilks: 2 * loglik_ratio ~ chi2(1) under the pure power law
    status: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, status: str, xmin: float = float("nan"), num_tail: int = 0):
        nan = float("nan")
        return cls(nan, nan, xmin, num_tail, nan, nan, nan, nan, status)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def _panels(lo: float, hi: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [lo, hi]."""
    edges = np.linspace(lo, hi, count + 1)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    return (mid + half * _GL_NODES).ravel(), (half * _GL_WEIGHTS).ravel()


def _tpl_moments(a: float, z: float) -> tuple[float, float, float]:
    """log E, E[ln t], E[t] for the density t^-a e^(-z t) / E on t >= 1 (z > 0).

    E(a, z) = int_1^inf t^-a e^(-z t) dt = int_0^inf exp(-(a-1) s - z e^s) ds, integrated in s
    by composite Gauss-Legendre after factoring out the integrand's peak; the range ends where
    the integrand falls below e^-60 of its peak.
    """
    s_peak = math.log((1.0 - a) / z) if (a < 1.0 and z < 1.0 - a) else 0.0
    g_peak = -(a - 1.0) * s_peak - z * math.exp(s_peak)

    def g_rel(s):
        return -(a - 1.0) * s - z * np.exp(s) - g_peak

    width = 1.0
    while g_rel(s_peak + width) > -60.0 and width < 512.0:
        width *= 2.0
    s, w = _panels(s_peak, s_peak + width, 48)
    if s_peak > 0:
        s0, w0 = _panels(0.0, s_peak, 48)
        s, w = np.concatenate([s0, s]), np.concatenate([w0, w])
    h = w * np.exp(g_rel(s))
    tot = h.sum()
    return g_peak + math.log(tot), float(h @ s) / tot, float(h @ np.exp(s)) / tot


def fit_truncated_power_law(evals, xmin: float, xmax: float | None = None, *,
                            min_tail: int = DEFAULT_MIN_TAIL,
                            thresh: float = WW_EVALS_THRESH) -> TruncatedPowerLawFit:
    r"""Maximum-likelihood exponentially truncated power law on the tail ``x >= xmin``.

    .. math::

        p(x) = \frac{x^{-\alpha} e^{-\lambda x}}{x_{\min}^{1-\alpha} E_\alpha(\lambda x_{\min})},
        \qquad E_\alpha(z) = \int_1^\infty t^{-\alpha} e^{-z t}\, dt

    (Clauset et al. 2009, Table 1). The log-likelihood is jointly concave in
    :math:`(\alpha, \lambda)` (an exponential family in :math:`(-\ln x, -x)`), so one
    L-BFGS-B run with the exact gradient (moments by quadrature) finds the maximum; the pure
    power law is the nested case :math:`\lambda = 0`, reported as ``loglik_power_law``.
    ``p_value`` uses Wilks' :math:`\chi^2_1` for :math:`2R` (conservative: :math:`\lambda = 0`
    lies on the boundary). ``xmax`` drops eigenvalues above it first. Status as in
    :func:`fit_power_law`, plus ``not_converged`` if the optimizer returns a non-finite point.
    When the cutoff does not raise the likelihood, ``lam = 0`` and ``alpha`` is the power-law
    MLE.
    """
    from scipy import optimize, stats

    min_tail = _check_options(min_tail, "weightwatcher")
    arr = _as_evals(evals)
    if not (np.isfinite(xmin) and xmin > 0):
        raise ConfigError(f"xmin must be a positive number, got {xmin!r}")
    if not np.all(np.isfinite(arr)):
        return TruncatedPowerLawFit.failed("not_finite", float(xmin))
    x = _positive_sorted(arr, thresh, xmax)
    u = x[x >= xmin] / xmin
    n = len(u)
    if n < min_tail:
        return TruncatedPowerLawFit.failed("tail_too_small", float(xmin), n)
    logu = np.log(u)
    if logu[-1] <= DEGENERATE_LOG_RANGE:
        return TruncatedPowerLawFit.failed("degenerate", float(xmin), n)
    A, Bs = float(logu.sum()) / n, float(u.sum()) / n
    a_pl = 1.0 + 1.0 / A
    ll_pl = n * (math.log(a_pl - 1.0) - a_pl * A - math.log(xmin))

    def nll(p):
        a, w = p
        z = math.exp(w)
        logE, Es, Et = _tpl_moments(a, z)
        return a * A + z * Bs + logE, np.array([A - Es, z * (Bs - Et)])

    # d nll / d lambda at (a_pl, 0) is Bs - E[u] = Bs - (a-1)/(a-2): if >= 0 the maximum of
    # the concave log-likelihood is on the boundary lambda = 0 (the pure power law)
    if a_pl > 2.0 and Bs >= (a_pl - 1.0) / (a_pl - 2.0):
        a, lam, ll = a_pl, 0.0, ll_pl
    else:
        start = np.array([a_pl, math.log(0.1 / Bs)])
        res = optimize.minimize(nll, start, jac=True, method="L-BFGS-B",
                                bounds=[(-20.0, 50.0), (math.log(1e-10), math.log(1e4))])
        if not np.all(np.isfinite(res.x)) or not np.isfinite(res.fun):
            return TruncatedPowerLawFit.failed("not_converged", float(xmin), n)
        a, lam = float(res.x[0]), math.exp(res.x[1]) / xmin
        ll = -n * (float(res.fun) + math.log(xmin))
        if ll <= ll_pl:                  # numerically no better than lambda = 0
            a, lam, ll = a_pl, 0.0, ll_pl
    ratio = ll - ll_pl
    return TruncatedPowerLawFit(a, lam, float(xmin), n, ll, ll_pl, ratio,
                                float(stats.chi2.sf(2.0 * ratio, df=1)), "ok")
