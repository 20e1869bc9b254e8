"""Stochastic trace estimation: Hutchinson and Hutch++, with standard errors.

Hutchinson (1989): for probes z with E[z zᵀ] = I (Rademacher ±1 entries here),

    tr(A) ≈ (1/m) Σ_i z_iᵀ A z_i,   stderr = sd(z_iᵀ A z_i) / √m,

an unbiased estimate whose variance 2(‖A‖_F² − Σ A_ii²)/m decays as 1/m.

Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021, Algorithm 1) spends the budget of m matvecs
in three thirds: a sketch Q = orth(A S) from m/3 Rademacher columns S, the exact trace of the
projected part tr(Qᵀ A Q) (m/3 matvecs), and Hutchinson on the deflated remainder with the last
m/3 probes G:

    tr(A) ≈ tr(Qᵀ A Q) + (1/|G|) Σ_g (P g)ᵀ A (P g),   P = I − Q Qᵀ.

For spectra that decay (the Hessian of a trained network: a few large outliers and a bulk near
zero) the error falls as 1/m instead of 1/√m. The reported standard error is that of the
remainder's Hutchinson mean (the projected part is exact given Q). With ``dim ≤ m/3`` the
sketch spans everything and the estimate is exact.

Probes are drawn on the CPU from ``seed`` (same numbers on any device); ``num_matvecs`` is the
budget for both methods so they compare at equal cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from deepscope.errors import ConfigError, ShapeError
from deepscope.linalg.lanczos import Matvec, _check_dim, _generator

__all__ = ["TraceEstimate", "hutchinson", "hutchpp", "trace_estimate", "rademacher"]


@dataclass
class TraceEstimate:
    """``value`` ± ``stderr`` from ``num_matvecs`` products; ``samples`` the Hutchinson terms."""

    value: float
    stderr: float
    num_matvecs: int
    method: str
    samples: np.ndarray


def rademacher(dim: int, count: int, *, generator: torch.Generator,
               dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """``count`` Rademacher (±1) vectors of length ``dim`` as the rows of a (count, dim) tensor."""
    z = torch.randint(0, 2, (count, dim), generator=generator, dtype=torch.int8)
    return (2 * z - 1).to(dtype=dtype, device=device)


def _mean_stderr(x: np.ndarray) -> tuple[float, float]:
    if x.size == 0:
        return 0.0, 0.0
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(np.mean(x)), se


def _apply(matvec: Matvec, v: Tensor) -> Tensor:
    w = matvec(v)
    if w.shape != v.shape:
        raise ShapeError(f"matvec returned shape {tuple(w.shape)}, expected {tuple(v.shape)}")
    return w.to(v.dtype)


def hutchinson(matvec: Matvec, dim: int, num_matvecs: int = 100, *,
               seed: int | torch.Generator | None = 0, dtype: torch.dtype = torch.float64,
               device=None) -> TraceEstimate:
    """Hutchinson's estimate of tr(A) from ``num_matvecs`` Rademacher probes."""
    dim = _check_dim(dim)
    if num_matvecs < 1:
        raise ConfigError(f"num_matvecs must be >= 1, got {num_matvecs}")
    g = _generator(seed)
    samples = np.empty(num_matvecs)
    for i in range(num_matvecs):  # one probe at a time: peak memory ~ one vector
        z = rademacher(dim, 1, generator=g, dtype=dtype, device=device)[0]
        samples[i] = float(z @ _apply(matvec, z))
    value, se = _mean_stderr(samples)
    return TraceEstimate(value, se, num_matvecs, "hutchinson", samples)


def hutchpp(matvec: Matvec, dim: int, num_matvecs: int = 100, *,
            seed: int | torch.Generator | None = 0, dtype: torch.dtype = torch.float64,
            device=None) -> TraceEstimate:
    """Hutch++'s estimate of tr(A) with a budget of ``num_matvecs`` (>= 3) products."""
    dim = _check_dim(dim)
    if num_matvecs < 3:
        raise ConfigError(f"hutch++ needs num_matvecs >= 3, got {num_matvecs}")
    g = _generator(seed)
    n_sketch = num_matvecs // 3
    n_rest = num_matvecs - 2 * n_sketch
    S = rademacher(dim, n_sketch, generator=g, dtype=dtype, device=device)
    AS = torch.stack([_apply(matvec, s) for s in S], dim=1)  # (dim, n_sketch)
    Q, _ = torch.linalg.qr(AS, mode="reduced")
    # any orthonormal Q keeps the estimate unbiased (a rank-deficient A S gives extra,
    # arbitrary directions, whose part of the trace is then computed exactly)
    low_rank = sum(float(Q[:, j] @ _apply(matvec, Q[:, j])) for j in range(Q.shape[1]))
    samples = np.empty(n_rest)
    for i in range(n_rest):
        z = rademacher(dim, 1, generator=g, dtype=dtype, device=device)[0]
        z = z - Q @ (Q.T @ z)
        samples[i] = float(z @ _apply(matvec, z))
    rest, se = _mean_stderr(samples)
    if n_sketch >= dim:  # the sketch spans the space: the estimate is exact
        rest, se = 0.0, 0.0
    return TraceEstimate(low_rank + rest, se, n_sketch + Q.shape[1] + n_rest, "hutch++", samples)


def trace_estimate(matvec: Matvec, dim: int, num_matvecs: int = 100, *,
                   method: str = "hutch++", seed: int | torch.Generator | None = 0,
                   dtype: torch.dtype = torch.float64, device=None) -> TraceEstimate:
    """Dispatch to :func:`hutchpp` (``"hutch++"``) or :func:`hutchinson`."""
    if method == "hutch++":
        return hutchpp(matvec, dim, num_matvecs, seed=seed, dtype=dtype, device=device)
    if method == "hutchinson":
        return hutchinson(matvec, dim, num_matvecs, seed=seed, dtype=dtype, device=device)
    raise ConfigError(f"trace method must be 'hutch++' or 'hutchinson', got {method!r}")
