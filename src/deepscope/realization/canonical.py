"""Symmetries of shallow ReLU nets: balancing, a canonical neuron order, neuron matching.

For f(x) = Σ_k a_k ReLU(w_k·x + b_k) + c the realization is unchanged by (Berner,
Elbrächter, Grohs et al., NeurIPS 2019, Sec. 2)

- permuting the neurons k, and
- positive rescaling: (w_k, b_k) → s (w_k, b_k), a_k → a_k / s for s > 0 (ReLU(s z) = s ReLU(z)).

Canonical representative (:func:`canonicalize`), with v_k = (w_k, b_k) ∈ R^{d+1}:

1. *constant neurons* (‖w_k‖ ≤ tol·max_j ‖w_j‖) are the constant a_k ReLU(b_k): it is added
   to c and the neuron is zeroed;
2. *null neurons* (‖a_k‖‖v_k‖ ≤ tol·max_j ‖a_j‖‖v_j‖, i.e. a_k ≈ 0 or v_k ≈ 0) contribute
   (almost) nothing and are zeroed. This is the closure of the rescaling orbit: with a_k = 0,
   s → 0 sends v_k to 0 (and vice versa), so the infimum of any distance over the orbit
   treats the neuron as zero;
3. *balancing*: s_k = sqrt(‖a_k‖ / ‖v_k‖), so that ‖a_k‖ = ‖v_k‖ = sqrt(‖a_k‖‖v_k‖) =: ρ_k
   (the neuron's magnitude). ‖·‖ is the Euclidean norm; for m outputs a_k is a vector;
4. *order*: by decreasing ρ_k, ties broken lexicographically on (v_k, a_k); zero neurons last.

These steps leave the function unchanged (steps 1 and 3 exactly, step 2 up to the tolerance).

Matching (:func:`match_neurons`): both nets are canonicalized, the narrower one is padded
with zero neurons, and neuron k of net a is described by θ_k = (w_k, b_k, a_k) ∈ R^{d+1+m}.
The Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`) on the cost
C_ij = ‖θ^a_i − θ^b_j‖_2² (``ord=2``) or ‖θ^a_i − θ^b_j‖_1 (``ord=1``) minimizes the total
ord-distance over all permutations exactly; for ``ord=inf`` the bottleneck assignment
(smallest achievable max_i ‖θ^a_i − θ^b_π(i)‖_∞, found by bisection over the sorted costs
with a perfect-matching test) is used, ties broken by the smallest sum. The parameter
distance modulo symmetries is that minimum, together with the output bias difference
‖c^a − c^b‖, i.e. the distance between balanced representatives minimized over permutations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deepscope.errors import ConfigError, ShapeError
from deepscope.realization.shallow import ShallowReLU, as_shallow

__all__ = ["canonicalize", "CanonicalForm", "canonical_form", "match_neurons", "Matching",
           "parameter_distance", "check_ord", "pad_neurons"]

DEFAULT_TOL = 1e-12


def check_ord(ord) -> float:
    """1, 2 or inf (also ``"inf"``); anything else is a ConfigError."""
    if isinstance(ord, str) and ord.lower() in ("inf", "max"):
        return math.inf
    if not isinstance(ord, bool) and ord in (1, 2, math.inf):
        return float(ord)
    raise ConfigError(f"ord must be 1, 2 or inf, got {ord!r}")


def _np(net: ShallowReLU) -> tuple[np.ndarray, ...]:
    return tuple(t.detach().cpu().numpy().astype(np.float64, copy=True)
                 for t in (net.W, net.b, net.A, net.c))


def _to_net(W, b, A, c, like: ShallowReLU) -> ShallowReLU:
    return ShallowReLU.from_arrays(W, b, A, c, device=like.device,
                                   input_shape=like.input_shape)


@dataclass(frozen=True)
class CanonicalForm:
    """A canonical net and how it was obtained from the original.

    ``net`` neuron i is original neuron ``order[i]`` rescaled by ``scales[i]`` (its (w, b)
    multiplied, its a divided); ``zeroed`` lists original neurons set to zero (constant
    ones folded into c first), which appear last in ``order``.
    """

    net: ShallowReLU
    order: np.ndarray
    scales: np.ndarray
    zeroed: tuple[int, ...]
    constant: tuple[int, ...]


def canonical_form(net, *, tol: float = DEFAULT_TOL) -> CanonicalForm:
    """Canonicalize (see the module docstring) and report the permutation and scales."""
    net = as_shallow(net)
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise ConfigError(f"tol must be a number in [0, 1), got {tol!r}")
    W, b, A, c = _np(net)
    n = W.shape[0]
    wn = np.linalg.norm(W, axis=1)
    constant = np.where(wn <= tol * (wn.max() if n else 0.0))[0] if n else np.array([], int)
    for k in constant:
        c = c + A[:, k] * max(b[k], 0.0)
        W[k], b[k], A[:, k] = 0.0, 0.0, 0.0
    vn = np.sqrt((W ** 2).sum(1) + b ** 2)
    an = np.linalg.norm(A, axis=0)
    prod = vn * an
    top = prod.max() if n else 0.0
    null = (prod <= tol * top) | (prod == 0)
    W[null], b[null], A[:, null] = 0.0, 0.0, 0.0
    scales = np.ones(n)
    live = ~null
    scales[live] = np.sqrt(an[live] / vn[live])
    W = W * scales[:, None]
    b = b * scales
    A = A / scales[None, :]
    rho = np.sqrt(prod) * live
    # lexsort: last key is primary; sort by -rho, then lexicographically on (w, b, a)
    keys = [A[j] for j in range(A.shape[0] - 1, -1, -1)] + [b] + \
        [W[:, j] for j in range(W.shape[1] - 1, -1, -1)] + [-np.round(rho, 12)]
    order = np.lexsort(keys) if n else np.zeros(0, dtype=int)
    canon = _to_net(W[order], b[order], A[:, order], c, net)
    zeroed = tuple(int(k) for k in np.where(null)[0])
    return CanonicalForm(canon, order, scales[order], zeroed,
                         tuple(int(k) for k in constant))


def canonicalize(net, *, tol: float = DEFAULT_TOL) -> ShallowReLU:
    """The canonical representative of a shallow ReLU net (same function)."""
    return canonical_form(net, tol=tol).net


def pad_neurons(net: ShallowReLU, n: int) -> ShallowReLU:
    """Append zero neurons (they compute 0) up to width ``n``."""
    extra = n - net.num_neurons
    if extra <= 0:
        return net
    z = dict(dtype=torch.float64, device=net.device)
    return ShallowReLU(torch.cat([net.W, torch.zeros(extra, net.input_dim, **z)]),
                       torch.cat([net.b, torch.zeros(extra, **z)]),
                       torch.cat([net.A, torch.zeros(net.output_dim, extra, **z)], dim=1),
                       net.c, net.input_shape)


def _theta(net: ShallowReLU) -> np.ndarray:
    """Per-neuron parameter rows θ_k = (w_k, b_k, a_k): shape (n, d + 1 + m)."""
    W, b, A, _ = _np(net)
    return np.concatenate([W, b[:, None], A.T], axis=1)


def _pair_costs(ta: np.ndarray, tb: np.ndarray, ord: float) -> np.ndarray:
    diff = ta[:, None, :] - tb[None, :, :]
    if ord == 2:
        return (diff ** 2).sum(-1)
    if ord == 1:
        return np.abs(diff).sum(-1)
    return np.abs(diff).max(-1) if diff.shape[-1] else np.zeros(diff.shape[:2])


def _bottleneck(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assignment minimizing the largest cost (then the sum among those)."""
    from scipy.optimize import linear_sum_assignment  # scipy.optimize: ~0.4 s to import
    vals = np.unique(cost)
    lo, hi = 0, len(vals) - 1
    while lo < hi:  # smallest threshold admitting a perfect matching
        mid = (lo + hi) // 2
        r, c = linear_sum_assignment((cost > vals[mid]).astype(float))
        if (cost[r, c] > vals[mid]).any():
            lo = mid + 1
        else:
            hi = mid
    t = vals[lo]
    big = cost.sum() + 1.0
    return linear_sum_assignment(np.where(cost > t, big, cost))


@dataclass(frozen=True)
class Matching:
    """Neuron i of ``a`` (canonical, padded) is matched to neuron ``perm[i]`` of ``b``.

    ``costs[i]`` is ‖θ^a_i − θ^b_perm[i]‖ in the chosen ord; ``distance`` the total
    (with the output biases); ``a`` and ``b`` are the canonical padded nets, ``b`` already
    permuted so that neuron i of both is a matched pair. ``order_a[i]`` is the index, in
    the original net a, of canonical neuron i (−1 for padding); ``order_b[i]`` that of the
    neuron of b matched to it.
    """

    a: ShallowReLU
    b: ShallowReLU
    perm: np.ndarray
    costs: np.ndarray
    distance: float
    ord: float
    num_real_a: int
    num_real_b: int
    order_a: np.ndarray
    order_b: np.ndarray


def _check_pair(a: ShallowReLU, b: ShallowReLU) -> None:
    if a.input_dim != b.input_dim or a.output_dim != b.output_dim:
        raise ShapeError(f"the two nets map R^{a.input_dim} -> R^{a.output_dim} and "
                         f"R^{b.input_dim} -> R^{b.output_dim}; expected the same dimensions")


def _combine(costs: np.ndarray, dc: np.ndarray, ord: float) -> float:
    if ord == 2:
        return float(math.sqrt(costs.sum() + (dc ** 2).sum()))
    if ord == 1:
        return float(costs.sum() + np.abs(dc).sum())
    return float(max(costs.max(initial=0.0), np.abs(dc).max(initial=0.0)))


def match_neurons(a, b, *, ord=2, canonical: bool = True,
                  tol: float = DEFAULT_TOL) -> Matching:
    """Match the neurons of ``b`` to those of ``a`` (see the module docstring)."""
    ord = check_ord(ord)
    a, b = as_shallow(a), as_shallow(b)
    _check_pair(a, b)
    order_a, order_b = np.arange(a.num_neurons), np.arange(b.num_neurons)
    if canonical:
        fa, fb = canonical_form(a, tol=tol), canonical_form(b, tol=tol)
        a, b, order_a, order_b = fa.net, fb.net, fa.order, fb.order
    n = max(a.num_neurons, b.num_neurons)
    order_a = np.concatenate([order_a, -np.ones(n - len(order_a), dtype=int)]).astype(int)
    order_b = np.concatenate([order_b, -np.ones(n - len(order_b), dtype=int)]).astype(int)
    real_a = int((_theta(a) != 0).any(1).sum()) if canonical else a.num_neurons
    real_b = int((_theta(b) != 0).any(1).sum()) if canonical else b.num_neurons
    a, b = pad_neurons(a, n), pad_neurons(b, n)
    ta, tb = _theta(a), _theta(b)
    cost = _pair_costs(ta, tb, ord)
    if n == 0:
        rows, cols = np.zeros(0, int), np.zeros(0, int)
    elif ord == math.inf:
        rows, cols = _bottleneck(cost)
    else:
        from scipy.optimize import linear_sum_assignment
        rows, cols = linear_sum_assignment(cost)
    perm = np.empty(n, dtype=int)
    perm[rows] = cols
    pair = cost[np.arange(n), perm]
    dc = (a.c - b.c).detach().cpu().numpy()
    dist = _combine(pair, dc, ord)
    per = np.sqrt(pair) if ord == 2 else pair
    idx = torch.as_tensor(perm, device=b.device)
    bp = ShallowReLU(b.W[idx], b.b[idx], b.A[:, idx], b.c, b.input_shape)
    return Matching(a, bp, perm, per, dist, ord, real_a, real_b, order_a, order_b[perm])


def parameter_distance(a, b, modulo_symmetries: bool = True, ord=2, *,
                       tol: float = DEFAULT_TOL) -> float:
    """Distance between the parameters of two shallow ReLU nets.

    ``modulo_symmetries=True``: between canonical (balanced, zero-cleaned) representatives,
    minimized over neuron permutations (:func:`match_neurons`). ``False``: the plain
    ord-norm of the difference of the parameter vectors (W, b, A, c) in the given neuron
    order. Nets of different widths are padded with zero neurons (at the end).
    """
    ord = check_ord(ord)
    if modulo_symmetries:
        return match_neurons(a, b, ord=ord, tol=tol).distance
    a, b = as_shallow(a), as_shallow(b)
    _check_pair(a, b)
    n = max(a.num_neurons, b.num_neurons)
    diff = pad_neurons(a, n).parameter_vector() - pad_neurons(b, n).parameter_vector()
    return float(torch.linalg.vector_norm(diff, ord=ord))
