"""The ``directions`` argument of :func:`deepscope.landscape.surface.surface`.

:func:`resolve_directions` turns it into ``dims`` direction dicts (keyed like
``named_parameters()``, on the model's device and dtype): ``"filter-normalized"`` (seeded
Gaussian, filter-normalized as Li et al. 2018, section 4), ``"pca-trajectory"`` (top principal
directions of a training trajectory, section 7, with the explained variance and the
trajectory's coordinates) or user directions used as given; the directions themselves are
computed in :mod:`deepscope.landscape.directions`. :func:`pca_span` is the default grid range
for PCA directions: the projected trajectory and the origin plus a 20% margin per axis.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from deepscope.errors import ConfigError, unknown_name
from deepscope.landscape.directions import (as_direction, filter_normalized_directions,
                                            pca_directions)

__all__ = ["DIRECTION_KINDS", "resolve_directions", "pca_span", "hessian_directions"]

DIRECTION_KINDS = ("filter-normalized", "pca-trajectory", "hessian")


def hessian_directions(model: nn.Module, base: dict[str, Tensor], dims: int, data, loss: str,
                       *, trainable: list[str], batch_size: int, seed: int
                       ) -> tuple[list[dict[str, Tensor]], dict]:
    """The top ``dims`` eigenvectors (largest algebraic eigenvalues, unit norm) of the loss
    Hessian at the center, over the ``trainable`` parameters (others: zero), as PyHessian's
    plots of the loss along its top eigenvectors; sign: the entry of largest magnitude is
    positive. ``data`` is the evaluated ``(x, y)``."""
    from deepscope.curvature.operators import (CurvatureOperator, canonical_sign,
                                               resolve_loss)
    from deepscope.errors import ModelError
    from deepscope.linalg import top_eigenvalues
    x, y = data
    names = [n for n in trainable if n in base]
    if not names:
        raise ModelError("directions='hessian': the model has no parameter that requires grad")
    ref = next(iter(base.values()))
    op = CurvatureOperator(model, x, y, resolve_loss(loss, "classification")[0], block=names,
                           batch_size=batch_size, dtype=ref.dtype, device=ref.device)
    eig = top_eigenvalues(op, op.dim, k=min(dims, op.dim), seed=seed, dtype=ref.dtype,
                          device=ref.device, return_vectors=True)
    dirs = []
    for i in range(eig.eigenvectors.shape[1]):
        d = {n: torch.zeros_like(t) for n, t in base.items()}
        d.update(op.as_params(canonical_sign(eig.eigenvectors[:, i])))
        dirs.append(d)
    return dirs, {"hessian_eigenvalues": [float(v) for v in eig.eigenvalues],
                  "hessian_residuals": [float(r) for r in eig.residuals]}


def resolve_directions(directions, model: nn.Module, base: dict[str, Tensor], dims: int, *,
                       trajectory, seed: int, include_bias: bool, include_bn: bool,
                       hessian_data=None) -> tuple[str, list[dict[str, Tensor]], dict]:
    """``(kind, directions, info)``: kind ``"filter-normalized"``, ``"pca-trajectory"``,
    ``"hessian"`` or ``"user"``; ``info`` holds the PCA explained variance (ratio) and
    trajectory coordinates, or the Hessian eigenvalues. ``hessian_data``:
    ``((x, y), loss, batch_size, trainable names)`` for ``"hessian"``."""
    info: dict = {}
    if isinstance(directions, str):
        if directions not in DIRECTION_KINDS:
            raise unknown_name("directions", directions, DIRECTION_KINDS)
        if directions == "hessian":
            if trajectory is not None:
                raise ConfigError("trajectory is only used with directions='pca-trajectory'")
            (xy, loss, batch_size, trainable) = hessian_data
            dirs, info = hessian_directions(model, base, dims, xy, loss, trainable=trainable,
                                            batch_size=batch_size, seed=seed)
            return directions, dirs, info
        if directions == "filter-normalized":
            if trajectory is not None:
                raise ConfigError("trajectory is only used with directions='pca-trajectory'")
            dirs = filter_normalized_directions(model, dims, seed=seed,
                                                include_bias=include_bias,
                                                include_bn=include_bn)
            return directions, [{k: v.to(base[k].device, base[k].dtype) for k, v in d.items()}
                                for d in dirs], info
        if trajectory is None:
            raise ConfigError("directions='pca-trajectory' needs trajectory=[...] (models, "
                              "parameter dicts or checkpoint paths along training)")
        # 1-D / BatchNorm parameters left out unless asked for, as for filter-normalized
        # directions (the authors' plot_trajectory.py with --ignore biasbn)
        pca = pca_directions(trajectory, model, dims, include_bias=include_bias,
                             include_bn=include_bn)
        info = {"explained_variance": pca.explained_variance,
                "explained_variance_ratio": pca.explained_variance_ratio,
                "trajectory_coords": pca.coords}
        return directions, pca.directions, info
    if isinstance(directions, (Tensor, Mapping)):
        directions = [directions]
    if not isinstance(directions, (list, tuple)) or len(directions) != dims:
        got = (f"{len(directions)} direction(s)" if isinstance(directions, (list, tuple))
               else type(directions).__name__)
        raise ConfigError(f"directions: expected 'filter-normalized', 'pca-trajectory' or "
                          f"{dims} direction(s) (flat tensors or {{name: tensor}} dicts) for a "
                          f"{dims}-D surface, got {got}")
    dirs = [as_direction(d, base, f"directions[{k}]") for k, d in enumerate(directions)]
    if trajectory is not None:
        raise ConfigError("trajectory is only used with directions='pca-trajectory'")
    return "user", dirs, info


def pca_span(coords: list[list[float]], dims: int) -> list[tuple[float, float]]:
    """Per axis: the range of the trajectory coordinates and the origin, widened on each side
    by 20% of its width."""
    c = np.asarray(coords, dtype=float).reshape(-1, dims)
    c = np.vstack([c, np.zeros((1, dims))])
    out = []
    for j in range(dims):
        lo, hi = float(c[:, j].min()), float(c[:, j].max())
        pad = 0.2 * max(hi - lo, 1e-12)
        out.append((lo - pad, hi + pad))
    return out

