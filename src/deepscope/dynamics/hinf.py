"""The infinite-width Gram matrix H∞ of the two-layer ReLU net of Du, Zhai, Poczos & Singh
("Gradient descent provably optimizes over-parameterized neural networks", ICLR 2019).

For f(x) = (1/√m) Σ_r a_r ReLU(w_rᵀx) with w_r ~ N(0, I), a_r = ±1 fixed and only the w_r
trained, the Gram matrix of gradient descent is H_ij(t) = (1/m) x_iᵀx_j Σ_r 1{w_rᵀx_i ≥ 0,
w_rᵀx_j ≥ 0}, whose m → ∞ limit at initialization is (their Eq. 3 / Lemma 3.1)

    H∞_ij = E_w[x_iᵀx_j 1{wᵀx_i ≥ 0, wᵀx_j ≥ 0}] = x_iᵀx_j (π − arccos(x_iᵀx_j)) / (2π)

for unit-norm inputs (the probability that both half-spaces contain w is (π − θ_ij)/(2π),
θ_ij the angle between x_i and x_j). λ0 = λ_min(H∞) > 0 when no two inputs are parallel
(their Theorem 3.1); gradient descent with step η = O(λ0/n²) then converges linearly,
‖u(k) − y‖² ≤ (1 − ηλ0/2)^k ‖u(0) − y‖², for m = Ω(n⁶/(λ0⁴δ³)).

Computed in float64; the cosine x_iᵀx_j is clipped to [−1, 1] before the arccos.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from deepscope.errors import ConfigError, ShapeError

__all__ = ["hinf_gram", "hinf_lambda0", "unit_rows"]

#: inputs count as unit norm when | ‖x‖ − 1 | <= this
NORM_TOL = 1e-4


def unit_rows(x, *, normalize: bool = False, tol: float = NORM_TOL) -> Tensor:
    """Inputs as a float64 (n, d) tensor with unit-norm rows (flattening trailing dims).

    Raises ConfigError if a row is not unit norm (within ``tol``) unless ``normalize``, which
    divides every row by its norm (a zero row is an error).
    """
    x = torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)
    if x.dim() < 2 or x.shape[0] == 0:
        raise ShapeError(f"expected inputs of shape (n, d) with n >= 1, got {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1)
    norms = x.norm(dim=1)
    if not torch.isfinite(x).all():
        raise ConfigError("inputs contain NaN or infinite values")
    if normalize:
        if (norms == 0).any():
            raise ConfigError(f"cannot normalize: input row {int((norms == 0).nonzero()[0])} "
                              f"is zero")
        return x / norms[:, None]
    off = (norms - 1).abs()
    if bool((off > tol).any()):
        raise ConfigError(f"H∞ (Du et al. 2018) is defined for unit-norm inputs: expected "
                          f"‖x_i‖ = 1, got norms in [{float(norms.min()):.6g}, "
                          f"{float(norms.max()):.6g}]; pass normalize=True to project them "
                          f"onto the sphere")
    return x


def hinf_gram(x, *, normalize: bool = False) -> Tensor:
    """H∞_ij = x_iᵀx_j (π − arccos(x_iᵀx_j)) / (2π) for unit-norm rows of ``x`` (float64)."""
    u = unit_rows(x, normalize=normalize)
    cos = (u @ u.T).clamp(-1.0, 1.0)
    return cos * (math.pi - torch.arccos(cos)) / (2 * math.pi)


def hinf_lambda0(x, *, normalize: bool = False) -> float:
    """λ0 = λ_min(H∞) for the inputs ``x`` (rows; see :func:`hinf_gram`)."""
    return float(np.linalg.eigvalsh(hinf_gram(x, normalize=normalize).numpy())[0])
