r"""Marchenko-Pastur (MP) bulk fit, spikes beyond the bulk edge, MP soft rank.

Marchenko & Pastur, "Distribution of eigenvalues for some sets of random matrices" (1967);
edge fluctuations: Johnstone, "On the distribution of the largest eigenvalue in principal
components analysis", Ann. Statist. 29 (2001); spikes: Baik, Ben Arous & Péché (2005) and
Benaych-Georges & Nadakuditi (2012); use for weight matrices: Martin & Mahoney, "Implicit
Self-Regularization in Deep Neural Networks" (JMLR 2021).

Conventions. ``W`` is N x M with N >= M, :math:`Q = N/M`, :math:`y = 1/Q`. The eigenvalues
passed in are those of :math:`W^\top W` (weightwatcher's convention, :math:`\lambda = s^2` for
the singular values s of W). The MP law is stated for the *normalized* eigenvalues
:math:`x = \lambda / N` of :math:`W^\top W / N`; for iid entries of variance :math:`\sigma^2`

.. math::

    \rho(x) = \frac{\sqrt{(x_+ - x)(x - x_-)}}{2\pi\sigma^2 y\, x}, \qquad
    x_\pm = \sigma^2 (1 \pm \sqrt{y})^2 .

Its CDF has a closed form: with :math:`x = \sigma^2 (m - r\cos\theta)`, :math:`m = 1 + y`,
:math:`r = 2\sqrt y`, :math:`\theta \in [0, \pi]`,

.. math::

    F = \frac{1}{2\pi y}\Bigl[ r\sin\theta + m\theta
        - 2(1-y)\arctan\Bigl(\sqrt{x_+/x_-}\,\tan\tfrac{\theta}{2}\Bigr)\Bigr]

(the last term vanishes at Q = 1); quantiles invert it by Newton steps.

Fit (milliseconds, no density grid). :math:`\sigma^2` solves least squares through the origin
between the 10 %, 15 %, ..., 90 % quantiles of the bulk eigenvalues and those of the
:math:`\sigma = 1` law, the bulk being the eigenvalues below the spike threshold of the current
:math:`\sigma^2`; iterate to a fixed point (spikes therefore never inflate :math:`\sigma`;
zeros from rank loss do deflate it, which the phase rules catch first).

Spikes. The largest eigenvalue of a pure MP matrix fluctuates around :math:`x_+` on the
Tracy-Widom scale (Johnstone 2001, in the normalized convention)

.. math::

    s_{TW} = \sigma^2\, Q^{-1/2} (1 + Q^{-1/2})^{4/3} M^{-2/3}
           = \sigma^{2/3}\; Q^{-1/2} x_+^{2/3} M^{-2/3},

so the spike threshold is :math:`x_+ + c\, s_{TW}` with ``tw_margin`` :math:`c = 4` (above
the 99.9 % point of TW1 with room for the error of :math:`\hat\sigma^2`). weightwatcher adds
:math:`\sqrt{Q^{-1/2} x_+^{2/3} M^{-2/3}}` to the edge of its rescaled spectrum instead.
Spikes within :math:`x_+ + w` of the edge, :math:`w = \max(0.1 (x_+ - x_-), 2 c\, s_{TW})`,
are *bleeding* out of the bulk; those beyond are *separated*.

Outputs are returned in the caller's scale: ``sigma`` is the std of W's entries (a Gaussian W
with std 0.1 gives 0.1), ``bulk_min``/``bulk_max``/``spike_threshold`` are in the scale of the
eigenvalues passed in (N times the normalized values), ``softrank`` = :math:`\lambda_+ /
\lambda_{\max}` (weightwatcher's ``mp_softrank``), ``ks_distance`` is the two-sided KS
distance between the bulk (eigenvalues up to the threshold) and the fitted MP law.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepscope.errors import ConfigError, ShapeError

__all__ = [
    "MPFit", "fit_mp", "mp_density", "mp_cdf", "mp_quantile", "mp_edges", "tracy_widom_scale",
    "DEFAULT_TW_MARGIN", "BLEED_BAND",
]

DEFAULT_TW_MARGIN = 4.0
"""Spike threshold = lambda_+ + DEFAULT_TW_MARGIN * Tracy-Widom scale."""
BLEED_BAND = 0.1
"""Spikes within max(BLEED_BAND * bulk width, 2 * margin * TW scale) of the edge bleed out."""
_LEVELS = np.linspace(0.1, 0.9, 17)


@dataclass(frozen=True)
class MPFit:
    """Result of :func:`fit_mp` (scales as described in the module docstring)."""

    sigma: float
    N: int
    M: int
    Q: float
    bulk_min: float
    bulk_max: float
    spike_threshold: float
    tw_scale: float
    num_spikes: int
    num_separated: int
    num_bleeding: int
    bleeding_fraction: float   # bleeding spikes / number of eigenvalues
    softrank: float
    ks_distance: float
    num_evals: int
    status: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, status: str, N: int, M: int, num_evals: int) -> MPFit:
        nan = float("nan")
        return cls(nan, N, M, N / M, nan, nan, nan, nan, 0, 0, 0, nan, nan, nan, num_evals, status)


def _check_Q(Q: float) -> float:
    if not (np.isfinite(Q) and Q >= 1.0):
        raise ConfigError(f"aspect ratio Q = N/M must be >= 1, got {Q!r}")
    return float(Q)


def mp_edges(Q: float, sigma: float = 1.0) -> tuple[float, float]:
    """Bulk edges :math:`\\sigma^2 (1 \\mp 1/\\sqrt{Q})^2` of the normalized MP law."""
    Q = _check_Q(Q)
    s2 = sigma * sigma
    return s2 * (1.0 - Q ** -0.5) ** 2, s2 * (1.0 + Q ** -0.5) ** 2


def mp_density(x, Q: float, sigma: float = 1.0) -> np.ndarray:
    """MP density of the normalized eigenvalues (0 outside the bulk; no atom for Q >= 1)."""
    lo, hi = mp_edges(Q, sigma)
    x = np.asarray(x, dtype=np.float64)
    y = 1.0 / Q
    inside = (x > lo) & (x < hi)
    xs = np.where(inside, x, 1.0)
    val = np.sqrt(np.clip((hi - xs) * (xs - lo), 0.0, None)) / (2 * math.pi * sigma**2 * y * xs)
    return np.where(inside, val, 0.0)


def _cdf_theta(theta, y: float):
    m, r = 1.0 + y, 2.0 * math.sqrt(y)
    out = r * np.sin(theta) + m * theta
    if y < 1.0:
        ratio = (1.0 + math.sqrt(y)) / (1.0 - math.sqrt(y))
        out = out - 2.0 * (1.0 - y) * np.arctan(ratio * np.tan(0.5 * theta))
    return out / (2.0 * math.pi * y)


def mp_cdf(x, Q: float, sigma: float = 1.0) -> np.ndarray:
    """Closed-form MP CDF of the normalized eigenvalues (module docstring)."""
    Q = _check_Q(Q)
    y = 1.0 / Q
    m, r = 1.0 + y, 2.0 * math.sqrt(y)
    t = np.asarray(x, dtype=np.float64) / (sigma * sigma)
    theta = np.arccos(np.clip((m - t) / r, -1.0, 1.0))
    return np.clip(_cdf_theta(theta, y), 0.0, 1.0)


def mp_quantile(p, Q: float, sigma: float = 1.0) -> np.ndarray:
    """Inverse of :func:`mp_cdf` (interpolated start, then Newton steps in theta)."""
    Q = _check_Q(Q)
    y = 1.0 / Q
    m, r = 1.0 + y, 2.0 * math.sqrt(y)
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    grid = np.linspace(0.0, math.pi, 513)
    Fg = _cdf_theta(grid, y)
    i = np.clip(np.searchsorted(Fg, p, side="right") - 1, 0, len(grid) - 2)
    lo, hi = grid[i], grid[i + 1]                      # bracket kept by every Newton step
    theta = np.interp(p, Fg, grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(6):
            dens = (r * np.sin(theta)) ** 2 / (2.0 * math.pi * y * (m - r * np.cos(theta)))
            step = np.where(dens > 0, (_cdf_theta(theta, y) - p) / dens, 0.0)
            theta = np.clip(theta - step, lo, hi)
    theta = np.where(p <= 0.0, 0.0, np.where(p >= 1.0, math.pi, theta))
    return sigma * sigma * (m - r * np.cos(theta))


def tracy_widom_scale(Q: float, M: int, sigma: float = 1.0) -> float:
    """Johnstone's Tracy-Widom scale of the largest normalized eigenvalue (module docstring)."""
    Q = _check_Q(Q)
    return sigma * sigma * Q ** -0.5 * (1.0 + Q ** -0.5) ** (4.0 / 3.0) * M ** (-2.0 / 3.0)


def _ks_to_mp(bulk: np.ndarray, Q: float, sigma: float) -> float:
    nb = len(bulk)
    F = mp_cdf(bulk, Q, sigma)
    k = np.arange(nb)
    return float(np.max(np.maximum(F - k / nb, (k + 1) / nb - F)))


def _shape(N: int, M: int, num_matrices: int, n: int) -> tuple[int, int]:
    for name, v in (("N", N), ("M", M), ("num_matrices", num_matrices)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ShapeError(f"{name} must be a positive integer, got {v!r}")
    N, M = max(int(N), int(M)), min(int(N), int(M))
    if n != M * num_matrices:
        raise ShapeError(f"expected num_matrices * min(N, M) = {num_matrices} * {M} = "
                         f"{M * num_matrices} eigenvalues, got {n}")
    return N, M


def fit_mp(evals, N: int, M: int, *, num_matrices: int = 1,
           tw_margin: float = DEFAULT_TW_MARGIN, max_iter: int = 50) -> MPFit:
    """Fit the MP bulk to the eigenvalues of :math:`W^\\top W` (one N x M matrix, or
    ``num_matrices`` pooled slices of that shape); count the spikes past the TW threshold.

    N and M may come in either order (the larger one is N). Status: ``not_finite``,
    ``too_few_evals`` (fewer than 4), ``degenerate`` (the fitted :math:`\\sigma` is 0: W = 0 or
    nearly all eigenvalues 0), ``ok``.
    """
    arr = np.asarray(evals, dtype=np.float64)
    if arr.ndim != 1:
        raise ShapeError(f"eigenvalues must be a 1-D array, got shape {arr.shape}")
    N, M = _shape(N, M, num_matrices, len(arr))
    if not tw_margin >= 0:
        raise ConfigError(f"tw_margin must be >= 0, got {tw_margin!r}")
    Q = N / M
    n = len(arr)
    if not np.all(np.isfinite(arr)):
        return MPFit.failed("not_finite", N, M, n)
    if n < 4:
        return MPFit.failed("too_few_evals", N, M, n)
    x = np.sort(np.clip(arr, 0.0, None)) / N
    q = mp_quantile(_LEVELS, Q)
    qq = float(q @ q)
    tw1 = tracy_widom_scale(Q, M)
    edge1 = (1.0 + Q ** -0.5) ** 2
    s2 = float(np.quantile(x, _LEVELS) @ q) / qq
    nb = n
    for _ in range(max_iter):
        if not s2 > 0:
            break
        nb = int(np.searchsorted(x, s2 * (edge1 + tw_margin * tw1), side="right"))
        new = float(np.quantile(x[:nb], _LEVELS) @ q) / qq
        if abs(new - s2) <= 1e-12 * s2:
            s2 = new
            break
        s2 = new
    if not s2 > 0:
        return MPFit.failed("degenerate", N, M, n)
    sigma = math.sqrt(s2)
    lo, hi = mp_edges(Q, sigma)
    tw = s2 * tw1
    thr = hi + tw_margin * tw
    band = hi + max(BLEED_BAND * (hi - lo), 2.0 * tw_margin * tw)
    nb = int(np.searchsorted(x, thr, side="right"))
    num_spikes = n - nb
    num_bleeding = int(np.searchsorted(x, band, side="right")) - nb
    lam_max = x[-1]
    return MPFit(
        sigma=sigma, N=N, M=M, Q=Q, bulk_min=lo * N, bulk_max=hi * N, spike_threshold=thr * N,
        tw_scale=tw * N, num_spikes=num_spikes, num_separated=num_spikes - num_bleeding,
        num_bleeding=num_bleeding, bleeding_fraction=num_bleeding / n,
        softrank=float(hi / lam_max) if lam_max > 0 else float("nan"),
        ks_distance=_ks_to_mp(x[:nb], Q, sigma) if nb > 0 else 1.0, num_evals=n, status="ok")
