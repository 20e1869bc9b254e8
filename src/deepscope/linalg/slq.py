"""Stochastic Lanczos quadrature (SLQ): the spectral density of a symmetric operator.

The spectral density of A ∈ R^{n×n} with eigenpairs (λ_i, u_i) is φ(t) = (1/n) Σ_i δ(t − λ_i).
For a unit vector v, vᵀ f(A) v = Σ_i (vᵀu_i)² f(λ_i) is a Riemann-Stieltjes integral against a
measure whose m-point Gaussian quadrature comes from m Lanczos steps started at v: the nodes
are the eigenvalues θ_j of the tridiagonal T_m and the weights τ_j = (first entry of T_m's j-th
eigenvector)² (Golub & Meurant 1994). With v random (E[v vᵀ] = I/n) the expectation is φ
itself, so averaging R runs gives the estimate (Ubaru, Chen & Saad, SIMAX 2017; applied to
network Hessians by Ghorbani, Krishnan & Xiao, ICML 2019, and PyHessian, Yao et al. 2020)

    φ(t) ≈ (1/R) Σ_r Σ_j τ_{r,j} g_σ(t − θ_{r,j}),      g_σ = N(0, σ²) density,

a discrete measure (nodes, weights summing to 1) broadened by a Gaussian. ``density`` is that
curve on a uniform grid covering the nodes ± 6σ, renormalized by its trapezoid integral so that
it integrates to exactly 1 on the grid. Each run uses full reorthogonalization (the Ghost
eigenvalues of plain Lanczos would put spurious mass on the outliers); a run stops early when
it finds an invariant subspace, where its quadrature is exact.

Cost: R · m matvecs. ``n · Σ weights · nodes`` is an (SLQ) estimate of tr(A).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepscope.errors import ConfigError
from deepscope.linalg.lanczos import Matvec, _check_dim, _generator, lanczos
from deepscope.linalg.trace import rademacher

__all__ = ["SpectralDensity", "slq", "gaussian_density"]


@dataclass
class SpectralDensity:
    """SLQ output: quadrature ``nodes``/``weights`` (a probability measure), the broadened
    ``density`` on ``grid``, the Gaussian width ``sigma``, matvecs used, runs and dimension."""

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    num_matvecs: int
    runs: int
    dim: int

    @property
    def trace(self) -> float:
        """The SLQ estimate of tr(A) = n · E_φ[t]."""
        return float(self.dim * np.sum(self.weights * self.nodes))


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, *, sigma: float | None = None,
                     grid: np.ndarray | None = None, num_points: int = 1000,
                     sigma_rel: float = 0.01) -> tuple[np.ndarray, np.ndarray, float]:
    """Broaden a discrete measure by N(0, σ²) on a grid; returns (grid, density, σ).

    σ defaults to ``sigma_rel`` times the spread of the nodes; the grid to ``num_points``
    uniform points over [min − 6σ, max + 6σ]. The density is renormalized to integrate to 1.
    """
    nodes = np.asarray(nodes, dtype=float)
    weights = np.asarray(weights, dtype=float)
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        width = hi - lo
        sigma = sigma_rel * (width if width > 0 else max(abs(hi), 1.0))
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}")
    if grid is None:
        if num_points < 2:
            raise ConfigError(f"num_points must be >= 2, got {num_points}")
        grid = np.linspace(lo - 6 * sigma, hi + 6 * sigma, num_points)
    grid = np.asarray(grid, dtype=float)
    dens = np.zeros_like(grid)
    for chunk in range(0, nodes.size, 256):  # bounded (grid x 256) temporaries
        d = (grid[:, None] - nodes[None, chunk:chunk + 256]) / sigma
        dens += np.exp(-0.5 * d * d) @ weights[chunk:chunk + 256]
    dens /= sigma * np.sqrt(2 * np.pi)
    area = np.trapezoid(dens, grid) if grid.size > 1 else 0.0
    if area > 0:
        dens = dens / area
    return grid, dens, float(sigma)


def slq(matvec: Matvec, dim: int, *, runs: int = 3, steps: int = 64,
        seed: int | torch.Generator | None = 0, dtype: torch.dtype = torch.float64,
        device=None, sigma: float | None = None, sigma_rel: float = 0.01,
        num_points: int = 1000) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Args:
        runs: independent Rademacher start vectors (R); steps: Lanczos steps per run (m).
        sigma: Gaussian broadening width (default ``sigma_rel`` x the nodes' spread).
        num_points: grid size of the density.
    """
    dim = _check_dim(dim)
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    g = _generator(seed)
    nodes, weights, used = [], [], 0
    for _ in range(runs):
        v = rademacher(dim, 1, generator=g, dtype=dtype, device=device)[0]
        dec = lanczos(matvec, v, steps)
        used += dec.num_matvecs
        theta, s = torch.linalg.eigh(dec.tridiagonal().to(torch.float64).cpu())
        nodes.append(theta.numpy())
        weights.append((s[0, :] ** 2).numpy() / runs)
    nodes_a, weights_a = np.concatenate(nodes), np.concatenate(weights)
    order = np.argsort(nodes_a, kind="stable")
    nodes_a, weights_a = nodes_a[order], weights_a[order]
    grid, dens, sig = gaussian_density(nodes_a, weights_a, sigma=sigma, sigma_rel=sigma_rel,
                                       num_points=num_points)
    return SpectralDensity(nodes=nodes_a, weights=weights_a, grid=grid, density=dens,
                           sigma=sig, num_matvecs=used, runs=runs, dim=dim)
