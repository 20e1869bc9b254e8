"""Realization distance of two shallow ReLU nets on a domain (sup and Sobolev norms).

Berner, Elbrächter, Grohs et al. (NeurIPS 2019) compare parametrizations with the distance
of their realizations on a compact domain Ω,

    ‖f_a − f_b‖_{L∞(Ω)} = sup_{x∈Ω} ‖f_a(x) − f_b(x)‖_2,
    ‖f_a − f_b‖_{W^{1,∞}(Ω)} = ‖f_a − f_b‖_{L∞(Ω)} + ess sup_{x∈Ω} ‖J f_a(x) − J f_b(x)‖_F,

(the Sobolev version adds the gradient difference; J is the m x d Jacobian, its Frobenius
norm is the Euclidean norm of the gradient for one output). Both are estimated on a dense
sample of Ω:

- Ω given as a box [(lo_1, hi_1), ..., (lo_d, hi_d)] (or one (lo, hi) for every axis):
  d <= 2: a regular grid with the box's corners (``samples`` points in 1-d, ceil(√samples)²
  in 2-d); d > 2: ``samples`` seeded uniform points in the box;
- Ω given by data points (an array / tensor of shape (N, d), or a deepscope Dataset, whose
  training inputs are used): the points themselves plus the grid / uniform sample of their
  bounding box.

In one dimension the estimate is exact: both functions are linear between the kinks
x = −b_k/w_k of the two nets, so the kinks inside the box and the midpoints between
consecutive kinks are added; |f_a − f_b| is then maximal at a sampled point and every
linear piece of the gradient difference is sampled. Elsewhere the sample sup is a lower
bound of the true sup that converges as the sample densifies.

Gradients are the exact piecewise-constant Jacobians by autograd (float64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from deepscope.errors import ConfigError, ShapeError
from deepscope.realization.shallow import ShallowReLU, as_shallow

__all__ = ["Domain", "resolve_domain", "sample_domain", "realization_distance",
           "RealizationDistance", "kinks_1d"]


@dataclass(frozen=True)
class Domain:
    """A box (d x 2 array of [lo, hi]) and, optionally, data points in it (N x d)."""

    box: np.ndarray
    data: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.box.shape[0])

    def describe(self) -> str:
        if self.data is not None:
            return f"{len(self.data)} data points (and their bounding box)"
        lo, hi = self.box[:, 0], self.box[:, 1]
        if np.all(lo == lo[0]) and np.all(hi == hi[0]):
            return f"[{lo[0]:g}, {hi[0]:g}]^{self.dim}"
        return " x ".join(f"[{a:g}, {b:g}]" for a, b in self.box)


def _data_array(domain) -> np.ndarray | None:
    if hasattr(domain, "x_train") and hasattr(domain, "task"):  # a deepscope Dataset
        domain = domain.x_train
    if isinstance(domain, Tensor):
        return domain.detach().cpu().to(torch.float64).reshape(domain.shape[0], -1).numpy()
    if isinstance(domain, np.ndarray):
        if domain.ndim < 2:
            raise ShapeError(f"data points must have shape (N, d), got {domain.shape}")
        return domain.astype(np.float64).reshape(domain.shape[0], -1)
    return None


def resolve_domain(domain, input_dim: int, *, max_data: int | None = 10000,
                   seed: int = 0) -> Domain:
    """Parse a domain: (lo, hi), [(lo, hi)] * d, or data points (array, tensor, Dataset).

    Lists and tuples are boxes; arrays, tensors and Datasets are data points. At most
    ``max_data`` data points are kept (a seeded random subset).
    """
    data = _data_array(domain)
    if data is not None:
        if data.shape[1] != input_dim:
            raise ShapeError(f"data points have {data.shape[1]} features, the nets take "
                             f"{input_dim}")
        if len(data) == 0:
            raise ShapeError("expected at least one data point, got none")
        if not np.isfinite(data).all():
            raise ConfigError("data points must be finite")
        if max_data is not None and len(data) > max_data:
            keep = np.random.default_rng(seed).choice(len(data), max_data, replace=False)
            data = data[np.sort(keep)]
        box = np.stack([data.min(0), data.max(0)], axis=1)
        return Domain(box, data)
    if not isinstance(domain, (list, tuple)) or len(domain) == 0:
        raise ConfigError(f"domain must be (lo, hi), a list of (lo, hi) per input dimension, "
                          f"or data points (array / tensor / Dataset); got {domain!r}")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in domain):
        if len(domain) != 2:
            raise ConfigError(f"a box for every axis is (lo, hi), got {domain!r}")
        pairs = [tuple(domain)] * input_dim
    else:
        pairs = [tuple(p) for p in domain]
        if len(pairs) != input_dim:
            raise ShapeError(f"domain has {len(pairs)} intervals, the nets take {input_dim} "
                             f"inputs")
    try:
        box = np.asarray(pairs, dtype=np.float64).reshape(input_dim, 2)
    except (TypeError, ValueError):
        raise ConfigError(f"domain intervals must be pairs of numbers, got {domain!r}") from None
    if not np.isfinite(box).all() or (box[:, 1] < box[:, 0]).any():
        raise ConfigError(f"domain intervals must be finite with lo <= hi, got {domain!r}")
    return Domain(box)


def kinks_1d(nets: tuple[ShallowReLU, ...], lo: float, hi: float) -> np.ndarray:
    """The kinks −b_k/w_k of one-input nets strictly inside (lo, hi), sorted."""
    pts = [np.zeros(0)]
    for net in nets:
        w = net.W[:, 0].detach().cpu().numpy()
        b = net.b.detach().cpu().numpy()
        live = (w != 0) & (np.linalg.norm(net.A.detach().cpu().numpy(), axis=0) > 0)
        k = -b[live] / w[live]
        pts.append(k[(k > lo) & (k < hi)])
    return np.unique(np.concatenate(pts))


def _kinks_and_midpoints(nets, lo: float, hi: float) -> np.ndarray:
    s = np.unique(np.concatenate([[lo, hi], kinks_1d(nets, lo, hi)]))
    return np.concatenate([s, (s[1:] + s[:-1]) / 2]) if len(s) > 1 else s


def sample_domain(domain: Domain, *, samples: int = 4096, seed: int = 0,
                  nets: tuple[ShallowReLU, ...] = ()) -> np.ndarray:
    """The evaluation points (see the module docstring); float64 array (N, d)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}")
    d, box = domain.dim, domain.box
    if d == 1:
        pts = np.linspace(box[0, 0], box[0, 1], max(samples, 2))[:, None]
        if nets:
            pts = np.concatenate([pts, _kinks_and_midpoints(nets, box[0, 0], box[0, 1])[:, None]])
    elif d == 2:
        k = max(2, math.ceil(math.sqrt(samples)))
        g0, g1 = (np.linspace(box[i, 0], box[i, 1], k) for i in range(2))
        pts = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    else:
        rng = np.random.default_rng(seed)
        pts = box[:, 0] + rng.random((samples, d)) * (box[:, 1] - box[:, 0])
    if domain.data is not None:
        pts = np.concatenate([pts, domain.data])
    return pts


@dataclass
class RealizationDistance:
    """Sample estimate of ‖f_a − f_b‖ on a domain (see the module docstring).

    ``value_diff[i]`` = ‖f_a(x_i) − f_b(x_i)‖_2 and ``grad_diff[i]`` = ‖J f_a(x_i) −
    J f_b(x_i)‖_F at ``points[i]`` (NaN at the kinks of one-input nets, where the gradient
    jumps and is not defined); ``sup`` and ``grad_sup`` their maxima, ``sobolev`` their
    sum, ``rms`` the root mean square of ``value_diff``, ``sup_a``/``sup_b`` the sup norms of
    f_a and f_b on the sample; ``exact`` is True when the sup is exact (one input dimension).
    """

    sup: float
    grad_sup: float
    sobolev: float
    rms: float
    sup_a: float
    sup_b: float
    argmax: list[float]
    grad_argmax: list[float]
    num_points: int
    exact: bool
    points: np.ndarray = field(repr=False)
    value_diff: np.ndarray = field(repr=False)
    grad_diff: np.ndarray = field(repr=False)


def realization_distance(a, b, domain, *, samples: int = 4096, seed: int = 0,
                         max_data: int | None = 10000,
                         chunk: int = 8192) -> RealizationDistance:
    """Sup and Sobolev (W^{1,∞}) distance of the realizations of two shallow ReLU nets.

    Args:
        a, b: shallow ReLU nets (modules, see :func:`~deepscope.realization.shallow.
            extract_shallow`, or :class:`ShallowReLU`); b is evaluated on a's device.
        domain: a :class:`Domain`, (lo, hi), [(lo, hi)] * d, or data points.
        samples: grid / uniform sample size; seed: for the uniform sample and data subset.
        max_data: at most this many data points (seeded subset).
        chunk: points per evaluation batch.
    """
    a, b = as_shallow(a), as_shallow(b)
    if a.input_dim != b.input_dim or a.output_dim != b.output_dim:
        raise ShapeError(f"the two nets map R^{a.input_dim} -> R^{a.output_dim} and "
                         f"R^{b.input_dim} -> R^{b.output_dim}; expected the same dimensions")
    b = b.to(a.device)
    if not isinstance(domain, Domain):
        domain = resolve_domain(domain, a.input_dim, max_data=max_data, seed=seed)
    elif domain.dim != a.input_dim:
        raise ShapeError(f"domain has {domain.dim} dimensions, the nets take {a.input_dim}")
    pts = sample_domain(domain, samples=samples, seed=seed, nets=(a, b))
    vd, gd, fa, fb = [], [], [], []
    for i in range(0, len(pts), chunk):
        x = torch.as_tensor(pts[i:i + chunk], dtype=torch.float64, device=a.device)
        ya, ja = a.value_and_jacobian(x)
        yb, jb = b.value_and_jacobian(x)
        vd.append(torch.linalg.vector_norm(ya - yb, dim=1).cpu().numpy())
        gd.append(torch.linalg.vector_norm(ja - jb, dim=(1, 2)).cpu().numpy())
        fa.append(torch.linalg.vector_norm(ya, dim=1).max().item())
        fb.append(torch.linalg.vector_norm(yb, dim=1).max().item())
    vd, gd = np.concatenate(vd), np.concatenate(gd)
    if domain.dim == 1:  # the gradient jumps at a kink: leave those points out of its sup
        kinks = kinks_1d((a, b), -math.inf, math.inf)
        gd[np.isin(pts[:, 0], kinks)] = np.nan
    sup, gsup = float(vd.max()), float(np.nanmax(gd)) if np.isfinite(gd).any() else 0.0
    return RealizationDistance(
        sup=sup, grad_sup=gsup, sobolev=sup + gsup, rms=float(np.sqrt(np.mean(vd ** 2))),
        sup_a=max(fa), sup_b=max(fb), argmax=pts[int(vd.argmax())].tolist(),
        grad_argmax=pts[int(np.nanargmax(gd))].tolist() if np.isfinite(gd).any() else pts[0].tolist(), num_points=len(pts),
        exact=domain.dim == 1, points=pts, value_diff=vd, grad_diff=gd)
