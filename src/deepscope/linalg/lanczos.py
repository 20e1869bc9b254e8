"""Lanczos with full reorthogonalization: extreme eigenvalues of a symmetric operator.

Given a symmetric ``A`` as a matvec on flat vectors and a start vector ``q_1``, the Lanczos
recurrence (Lanczos 1950; Golub & Van Loan, *Matrix Computations*, §10.1)

    β_j q_{j+1} = A q_j − α_j q_j − β_{j−1} q_{j−1},     α_j = q_jᵀ A q_j,

builds an orthonormal basis ``Q_m`` of the Krylov space K_m(A, q_1) in which
``Q_mᵀ A Q_m = T_m`` is tridiagonal (diagonal α, off-diagonal β). The eigenpairs (θ_i, s_i) of
``T_m`` give Ritz pairs (θ_i, y_i = Q_m s_i) with the residual norm

    ‖A y_i − θ_i y_i‖ = β_m |s_i[m]|        (Paige 1971),

which is what :func:`top_eigenvalues` reports and tests against ``tol · ‖A‖`` (‖A‖ estimated
by the largest |Ritz value|). The eigenvalue error is at most the residual, and about
residual² / gap once the Ritz value is isolated. Every new vector is orthogonalized against the
whole basis twice (classical Gram-Schmidt twice, "CGS2"), so rounding never produces the
spurious copies of converged eigenvalues that plain Lanczos does; the price is ``m`` stored
vectors (``m · dim`` numbers) and O(m² · dim) flops, small next to ``m`` Hessian-vector
products.

A breakdown (β_j ≈ 0: an invariant subspace) before ``k`` Ritz values exist restarts the
recurrence from a random vector orthogonal to the basis. As with any single-vector Krylov
method, a repeated eigenvalue is found once per Krylov block.

Why our own implementation rather than ``scipy.sparse.linalg.eigsh`` (ARPACK, implicitly
restarted Lanczos): it stays in torch (GPU, float32 or float64, no host round trip per
matvec), counts and bounds its matvecs, stops as soon as the requested Ritz residuals are
small, and shares its recurrence with stochastic Lanczos quadrature
(:mod:`deepscope.linalg.slq`). ARPACK is kept as ``method="scipy"`` (a cross-check and the
benchmark's tight reference). On the 784-512-512-10 MLP of
``benchmarks/hessian_vs_pyhessian.py`` ARPACK (k=2, ncv=20, tol 1e-10, float64) used 23
products; ours reached the top eigenvalue to 2e-5 relative error in 6 (float32, tol 1e-4).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from deepscope.errors import ConfigError, ModelError, ShapeError

__all__ = ["Matvec", "EigenResult", "LanczosDecomposition", "lanczos", "top_eigenvalues",
           "random_unit_vector"]

Matvec = Callable[[Tensor], Tensor]


@dataclass
class LanczosDecomposition:
    """``A Q ≈ Q T`` after ``m`` steps: ``alpha`` (m,), ``beta`` (m,) — ``beta[-1]`` is the
    residual coupling β_m — and the orthonormal ``basis`` (m, dim)."""

    alpha: Tensor
    beta: Tensor
    basis: Tensor
    num_matvecs: int
    breakdown: bool

    @property
    def steps(self) -> int:
        return int(self.alpha.numel())

    def tridiagonal(self) -> Tensor:
        """The m x m tridiagonal ``T = Qᵀ A Q``."""
        m = self.steps
        T = torch.diag(self.alpha)
        if m > 1:
            off = self.beta[:m - 1]
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        return T


@dataclass
class EigenResult:
    """Ritz approximations of extreme eigenpairs.

    ``eigenvalues`` (k,) in the requested order; ``residuals`` (k,) the Ritz residual norms
    ‖A y − θ y‖ (for unit y); ``eigenvectors`` (dim, k) or None; ``num_matvecs`` used;
    ``converged`` whether every residual is below ``tol`` times the ‖A‖ estimate.
    """

    eigenvalues: Tensor
    residuals: Tensor
    eigenvectors: Tensor | None
    num_matvecs: int
    converged: bool
    steps: int


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def random_unit_vector(dim: int, *, seed: int | torch.Generator | None = 0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """A Gaussian vector of norm 1, drawn on the CPU from ``seed`` (same numbers on any device)."""
    v = torch.randn(dim, generator=_generator(seed), dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


class _Lanczos:
    """The recurrence, one step at a time (state: basis, α, β, matvec count)."""

    def __init__(self, matvec: Matvec, q0: Tensor, max_steps: int, reorth: bool):
        self.matvec = matvec
        self.reorth = reorth
        n = q0.numel()
        self.Q = torch.empty(max_steps + 1, n, dtype=q0.dtype, device=q0.device)
        self.Q[0] = q0 / q0.norm()
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.anorm = 0.0
        self.breakdown = False
        self.eps = torch.finfo(q0.dtype).eps

    @property
    def m(self) -> int:
        return len(self.alpha)

    def step(self) -> None:
        j = self.m
        q = self.Q[j]
        w = self.matvec(q)
        if w.shape != q.shape:
            raise ShapeError(f"matvec returned shape {tuple(w.shape)}, expected {tuple(q.shape)}")
        w = w.to(q.dtype)
        a = float(q @ w)
        w = w - a * q
        if j > 0:
            w = w - self.beta[-1] * self.Q[j - 1]
        if self.reorth:
            basis = self.Q[:j + 1]
            for _ in range(2):
                w = w - basis.T @ (basis @ w)
        b = float(w.norm())
        self.alpha.append(a)
        self.beta.append(b)
        self.anorm = max(self.anorm, abs(a) + b + (self.beta[-2] if j > 0 else 0.0))
        if not math.isfinite(a) or not math.isfinite(b):
            raise ModelError(f"Lanczos step {j}: expected finite matvec values, got "
                             f"alpha={a}, beta={b} (is the loss finite?)")
        if b <= 100 * self.eps * max(self.anorm, 1e-300):
            self.breakdown = True  # invariant subspace: T's eigenvalues are exact
            return
        self.Q[j + 1] = w / b

    def restart(self, generator: torch.Generator) -> None:
        """After a breakdown, continue from a random vector orthogonal to the basis (a new
        Krylov block; T becomes block diagonal). Finds further copies of repeated eigenvalues
        and the rest of the spectrum of operators whose Krylov space is smaller than k."""
        j = self.m
        w = torch.randn(self.Q.shape[1], generator=generator, dtype=torch.float64)
        w = w.to(dtype=self.Q.dtype, device=self.Q.device)
        basis = self.Q[:j]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        self.beta[-1] = 0.0
        self.Q[j] = w / w.norm()
        self.breakdown = False

    def decomposition(self) -> LanczosDecomposition:
        m = self.m
        dt, dev = self.Q.dtype, self.Q.device
        return LanczosDecomposition(alpha=torch.tensor(self.alpha, dtype=dt, device=dev),
                                    beta=torch.tensor(self.beta, dtype=dt, device=dev),
                                    basis=self.Q[:m], num_matvecs=m, breakdown=self.breakdown)


def _check_dim(dim: int) -> int:
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ShapeError(f"operator dimension must be a positive integer, got {dim!r}")
    return int(dim)


def lanczos(matvec: Matvec, v0: Tensor, steps: int, *, reorth: bool = True
            ) -> LanczosDecomposition:
    """Run ``steps`` Lanczos steps from ``v0`` (stops early on an invariant subspace).

    Returns the tridiagonal coefficients and the basis; ``num_matvecs`` = steps taken.
    """
    if v0.dim() != 1 or v0.numel() < 1:
        raise ShapeError(f"v0 must be a non-empty 1-D vector, got shape {tuple(v0.shape)}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if float(v0.norm()) == 0.0:
        raise ConfigError("v0 must be non-zero, got the zero vector")
    steps = min(int(steps), v0.numel())
    run = _Lanczos(matvec, v0, steps, reorth)
    while run.m < steps and not run.breakdown:
        run.step()
    return run.decomposition()


def _order(theta: Tensor, which: str) -> Tensor:
    key = theta if which == "largest" else (theta.abs() if which == "magnitude" else -theta)
    return torch.argsort(key, descending=True)


def top_eigenvalues(matvec: Matvec, dim: int, k: int = 1, *, which: str = "largest",
                    tol: float | None = None, rtol: float | None = None,
                    max_steps: int | None = None,
                    seed: int | torch.Generator | None = 0, dtype: torch.dtype = torch.float64,
                    device=None, return_vectors: bool = False, method: str = "lanczos",
                    v0: Tensor | None = None, lower_bounds=None) -> EigenResult:
    """The ``k`` extreme eigenvalues of a symmetric operator.

    Args:
        matvec: ``v -> A v`` on 1-D tensors of length ``dim``.
        k: how many eigenvalues.
        which: ``"largest"`` (algebraic, descending), ``"smallest"`` (ascending) or
            ``"magnitude"`` (by |λ|, descending).
        tol: stop when every wanted Ritz residual is ≤ ``tol · ‖A‖`` (default 1e-8 in
            float64, 1e-4 in float32). The residual bounds the eigenvalue error rigorously.
        rtol: stop as soon as every wanted Ritz value θ has an *estimated* relative error
            ``min(r, r²/gap) ≤ rtol·|θ|`` (r its residual, gap the distance to the nearest
            other Ritz value; Parlett, *The Symmetric Eigenvalue Problem*, §11.7), even if
            ``tol`` is not met yet. ``r²/gap`` is the standard a-posteriori estimate once θ
            is isolated; it uses the Ritz gap in place of the true one, so it is an
            estimate, not a bound (the reported residuals remain the bound). Default None.
        max_steps: Krylov dimension cap (default ``min(dim, max(100, 10 k))``).
        seed: start vector seed (Gaussian, drawn on the CPU).
        v0: the start vector instead (any non-zero vector of length ``dim``; normalized).
            A start close to the wanted eigenvector needs fewer products; one orthogonal to
            it never finds it (in exact arithmetic), so mix in a random part.
        lower_bounds: known lower bounds ``b_j <= λ_j`` on the largest eigenvalues in
            descending order (e.g. a principal submatrix's eigenvalues, by Cauchy
            interlacing). With ``which="largest"`` the ``rtol`` estimate measures the gap
            below each wanted Ritz value to ``max(next Ritz value, b_next)``: after a few
            steps from a good start the next Ritz value still lies far below λ_next, and
            the plain estimate would be too optimistic.
        method: ``"lanczos"`` (ours, full reorthogonalization) or ``"scipy"`` (ARPACK
            ``eigsh`` on a ``LinearOperator``; float64 on the host).
    """
    dim = _check_dim(dim)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= dim:
        raise ConfigError(f"k must be an integer in [1, {dim}], got {k!r}")
    if which not in ("largest", "smallest", "magnitude"):
        raise ConfigError(f"which must be 'largest', 'smallest' or 'magnitude', got {which!r}")
    if tol is None:
        tol = 1e-8 if dtype == torch.float64 else 1e-4
    if not tol > 0:
        raise ConfigError(f"tol must be > 0, got {tol}")
    if rtol is not None and not rtol > 0:
        raise ConfigError(f"rtol must be > 0 or None, got {rtol}")
    if max_steps is None:
        max_steps = max(100, 10 * k)
    if max_steps < k:
        raise ConfigError(f"max_steps must be >= k = {k}, got {max_steps}")
    max_steps = min(int(max_steps), dim)
    if method == "scipy":
        if rtol is not None:
            raise ConfigError("rtol applies to method='lanczos' only; ARPACK uses tol")
        if v0 is not None or lower_bounds is not None:
            raise ConfigError("v0 and lower_bounds apply to method='lanczos' only")
        return _eigsh(matvec, dim, k, which, tol, max_steps, seed, dtype, device,
                      return_vectors)
    if method != "lanczos":
        raise ConfigError(f"method must be 'lanczos' or 'scipy', got {method!r}")

    gen = _generator(seed)
    if v0 is None:
        q0 = random_unit_vector(dim, seed=gen, dtype=dtype, device=device)
    else:
        if not isinstance(v0, Tensor) or v0.dim() != 1 or v0.numel() != dim:
            raise ShapeError(f"v0 must be a 1-D tensor of length {dim}, got "
                             f"{tuple(v0.shape) if isinstance(v0, Tensor) else type(v0).__name__}")
        nrm = float(v0.norm())
        if not (math.isfinite(nrm) and nrm > 0):
            raise ConfigError(f"v0 must be finite and non-zero, got norm {nrm}")
        q0 = (v0 / nrm).to(dtype=dtype, device=device)
    run = _Lanczos(matvec, q0, max_steps, reorth=True)
    theta = s = None
    idx = None
    while True:
        run.step()
        m = run.m
        if run.breakdown and m < k:
            run.restart(gen)
            continue
        done = run.breakdown or m >= max_steps
        if m >= k:  # eigh of the small T is free next to a matvec: check every step
            T = run.decomposition().tridiagonal().to(torch.float64).cpu()
            theta, s = torch.linalg.eigh(T)
            idx = _order(theta, which)[:k]
            res = abs(run.beta[-1]) * s[-1, idx].abs()
            scale = max(float(theta.abs().max()), 1e-300)
            converged = bool((res <= tol * scale).all())
            if not converged and rtol is not None and m > k:
                est = _error_estimates(theta, idx, res,
                                       lower_bounds if which == "largest" else None)
                converged = bool((est <= rtol * theta[idx].abs()).all())
            if converged or done:
                break
    vecs = None
    if return_vectors:
        S = s[:, idx].to(dtype=dtype, device=run.Q.device)
        vecs = run.Q[:m].T @ S
    return EigenResult(eigenvalues=theta[idx].to(dtype), residuals=res.to(dtype),
                       eigenvectors=vecs, num_matvecs=run.m, converged=converged, steps=m)


def _error_estimates(theta: Tensor, idx: Tensor, res: Tensor, lower_bounds=None) -> Tensor:
    """``min(r, r²/gap)`` per wanted Ritz value, gap = distance to the nearest other one
    (``lower_bounds``, largest eigenvalues only: the value below the r-th largest Ritz value
    is raised to the bound ``b_{r+1}`` on λ_{r+1} where that is higher)."""
    out = []
    desc = torch.argsort(theta, descending=True).tolist()
    bounds = [float(b) for b in lower_bounds] if lower_bounds is not None else []
    for j, i in enumerate(idx.tolist()):
        others = torch.cat([theta[:i], theta[i + 1:]])
        gap = float((others - theta[i]).abs().min()) if others.numel() else math.inf
        rank = desc.index(i)
        if rank + 1 < len(bounds):
            below = float(theta[desc[rank + 1]]) if rank + 1 < len(desc) else -math.inf
            gap = min(gap, float(theta[i]) - max(below, bounds[rank + 1]))
            gap = max(gap, 0.0)
        r = float(res[j])
        out.append(min(r, r * r / gap) if gap > 0 else r)
    return torch.tensor(out, dtype=theta.dtype)


def _eigsh(matvec, dim, k, which, tol, max_steps, seed, dtype, device, return_vectors):
    from scipy.sparse.linalg import LinearOperator, eigsh

    count = [0]

    def mv(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        v = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=dtype, device=device)
        return matvec(v).detach().to(torch.float64).cpu().numpy()

    op = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    v0 = random_unit_vector(dim, seed=seed, dtype=torch.float64).numpy()
    sc_which = {"largest": "LA", "smallest": "SA", "magnitude": "LM"}[which]
    ncv = min(dim, max(2 * k + 1, 20))
    if k >= dim:
        raise ConfigError(f"method='scipy' needs k < dim = {dim}, got k = {k}")
    vals, vecs = eigsh(op, k=k, which=sc_which, tol=tol, v0=v0, ncv=ncv,
                       maxiter=max(10 * max_steps, 1000))
    order = _order(torch.from_numpy(vals), which)
    vals, vecs = vals[order.numpy()], vecs[:, order.numpy()]
    V = torch.from_numpy(vecs)
    res = torch.stack([torch.as_tensor(mv(V[:, i].numpy())) - vals[i] * V[:, i]
                       for i in range(k)]).norm(dim=1)
    return EigenResult(eigenvalues=torch.from_numpy(vals).to(dtype),
                       residuals=res.to(dtype),
                       eigenvectors=V.to(dtype=dtype, device=device) if return_vectors else None,
                       num_matvecs=count[0], converged=True, steps=ncv)
