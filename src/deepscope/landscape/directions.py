"""Directions in parameter space for loss-surface slices.

- :func:`filter_normalized_directions`: Gaussian directions, filter-normalized as in Li, Xu,
  Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018),
  section 4: for every filter ``f`` (a slice along dimension 0 of a parameter with two or more
  dimensions: a row of a Linear weight, an output channel of a convolution, a row of an
  embedding) ``d_f <- d_f * ||theta_f|| / ||d_f||``. Parameters with at most one dimension
  (biases, BatchNorm / LayerNorm scales and shifts) and every parameter of a BatchNorm module
  get a zero direction by default; with ``include_bias`` / ``include_bn`` they are kept, each
  vector normalized as one filter (``||d|| = ||theta||``; the authors' code copies ``theta``
  into the direction instead). Filters with ``||theta_f|| = 0`` get a zero direction.
  Draws use a CPU ``torch.Generator`` seeded with ``seed`` (the same numbers on any device).
- :func:`pca_directions`: the "pca-trajectory" directions of Li et al. (section 7): the top
  principal directions of ``{theta_i - theta_final}`` over a training trajectory (centered PCA
  by SVD, as the authors' ``sklearn.decomposition.PCA``), unit-norm and orthogonal, with the
  explained variance and the trajectory's coordinates in the plane.
- :func:`as_direction`: a user-given direction (a flat vector or a ``{name: tensor}`` dict)
  checked against the model and returned as a parameter dict.

Directions are ``dict[str, Tensor]`` keyed like ``model.named_parameters()``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from deepscope.errors import ConfigError, ShapeError

__all__ = ["filter_normalized_directions", "filter_normalize", "pca_directions",
           "PCADirections", "as_direction", "bn_parameter_names", "direction_norm",
           "direction_dot", "directions_fingerprint", "trajectory_params"]

Params = dict[str, Tensor]


def bn_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that belong to BatchNorm modules."""
    out = set()
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for pname, _ in m.named_parameters(recurse=False):
                out.add(f"{mname}.{pname}" if mname else pname)
    return out


def _params(model: nn.Module | Mapping[str, Tensor]) -> Params:
    if isinstance(model, nn.Module):
        return {n: p.detach() for n, p in model.named_parameters()}
    if isinstance(model, Mapping):
        return {str(n): t.detach() for n, t in model.items()}
    raise ConfigError(f"expected an nn.Module or a {{name: tensor}} dict, "
                      f"got {type(model).__name__}")


def _kept(name: str, t: Tensor, bn_names: set[str], include_bias: bool,
          include_bn: bool) -> bool:
    if name in bn_names:
        return include_bn
    if t.dim() <= 1:
        return include_bias
    return True


def filter_normalize(direction: Mapping[str, Tensor], reference: Mapping[str, Tensor], *,
                     bn_names: set[str] | frozenset = frozenset(), include_bias: bool = False,
                     include_bn: bool = False) -> Params:
    """Filter-normalize ``direction`` against ``reference`` (Li et al. 2018, eq. in sec. 4).

    Returns a new dict: for tensors with ``dim >= 2`` each slice ``[i]`` along dimension 0 is
    rescaled to the norm of the reference's slice; 1-D tensors (and BatchNorm parameters
    ``bn_names``) are zeroed unless ``include_bias`` (``include_bn``) asks to keep them, in
    which case the whole vector is rescaled to the reference vector's norm.
    """
    out: Params = {}
    for name, ref in reference.items():
        if name not in direction:
            raise ShapeError(f"direction lacks parameter {name!r} of the model")
        d = direction[name].detach().to(ref.device, ref.dtype)
        if d.shape != ref.shape:
            raise ShapeError(f"direction for {name!r}: expected shape {tuple(ref.shape)}, "
                             f"got {tuple(d.shape)}")
        if not _kept(name, ref, set(bn_names), include_bias, include_bn):
            out[name] = torch.zeros_like(ref)
            continue
        rows = ref.shape[0] if ref.dim() >= 2 else 1  # a 1-D vector is one filter
        d2, r2 = d.reshape(rows, -1), ref.reshape(rows, -1)
        dn, rn = d2.norm(dim=1, keepdim=True), r2.norm(dim=1, keepdim=True)
        scale = torch.where(dn > 0, rn / torch.where(dn > 0, dn, torch.ones_like(dn)),
                            torch.zeros_like(dn))
        out[name] = (d2 * scale).reshape(ref.shape)
    return out


def filter_normalized_directions(model: nn.Module | Mapping[str, Tensor], n: int = 2, *,
                                 seed: int = 0, include_bias: bool = False,
                                 include_bn: bool = False,
                                 bn_names: set[str] | None = None) -> list[Params]:
    """``n`` seeded Gaussian directions, filter-normalized to ``model``'s parameters.

    Args:
        model: an ``nn.Module`` (never modified) or a ``{name: tensor}`` parameter dict.
        n: number of directions (1 for a line, 2 for a plane).
        seed: seeds a CPU generator; direction ``k`` is the ``k``-th draw of all parameters in
            ``named_parameters`` order, so seed ``s`` with ``n=1`` gives the first direction
            of seed ``s`` with ``n=2``.
        include_bias, include_bn: keep (normalized) directions for 1-D parameters / BatchNorm
            parameters instead of zeroing them.
        bn_names: BatchNorm parameter names when ``model`` is a dict (found from the module
            otherwise).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    ref = _params(model)
    if not ref:
        raise ConfigError("expected a model with parameters, got one with none")
    if bn_names is None:
        bn_names = bn_parameter_names(model) if isinstance(model, nn.Module) else set()
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        raw = {name: torch.randn(t.shape, generator=g, dtype=torch.float32)
               for name, t in ref.items()}
        out.append(filter_normalize(raw, ref, bn_names=bn_names, include_bias=include_bias,
                                    include_bn=include_bn))
    return out


def as_direction(direction, reference: Mapping[str, Tensor], what: str = "direction") -> Params:
    """A user-given direction: a flat vector (``named_parameters`` order) or a name->tensor
    dict (missing names are zero), checked against ``reference`` shapes."""
    if isinstance(direction, Tensor):
        total = sum(t.numel() for t in reference.values())
        if direction.dim() != 1 or direction.numel() != total:
            raise ShapeError(f"{what}: expected a flat vector of {total} entries (the model's "
                             f"parameters) or a {{name: tensor}} dict, got a tensor of shape "
                             f"{tuple(direction.shape)}")
        out, i = {}, 0
        for name, t in reference.items():
            out[name] = direction[i:i + t.numel()].detach().reshape(t.shape).to(
                t.device, t.dtype).clone()
            i += t.numel()
        return out
    if isinstance(direction, Mapping):
        unknown = [k for k in direction if k not in reference]
        if unknown:
            raise ShapeError(f"{what}: names {unknown[:3]} are not parameters of the model "
                             f"(expected some of {list(reference)[:5]}...)")
        out = {}
        for name, t in reference.items():
            if name in direction:
                d = direction[name]
                if not isinstance(d, Tensor) or tuple(d.shape) != tuple(t.shape):
                    got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                    raise ShapeError(f"{what}[{name!r}]: expected a tensor of shape "
                                     f"{tuple(t.shape)}, got {got}")
                out[name] = d.detach().to(t.device, t.dtype).clone()
            else:
                out[name] = torch.zeros_like(t)
        return out
    raise ConfigError(f"{what}: expected a flat tensor or a {{name: tensor}} dict, got "
                      f"{type(direction).__name__}")


def direction_norm(d: Mapping[str, Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in d.values())))


def direction_dot(d1: Mapping[str, Tensor], d2: Mapping[str, Tensor]) -> float:
    return float(sum((d1[k].double() * d2[k].double()).sum() for k in d1))


def directions_fingerprint(directions: Sequence[Mapping[str, Tensor]]) -> str:
    """sha256 over the directions' names, shapes and float32 bytes (resume-file checks)."""
    h = hashlib.sha256()
    for d in directions:
        for name, t in d.items():
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def trajectory_params(item, reference: Mapping[str, Tensor], index: int = 0) -> Params:
    """One trajectory entry as a parameter dict: an ``nn.Module``, a ``{name: tensor}`` dict
    (a state dict; buffers are ignored) or a path (deepscope checkpoint or weights file)."""
    if isinstance(item, (str, Path)):
        from deepscope._io import read_tensors
        from deepscope.train.checkpoint import is_checkpoint, load_checkpoint
        path = Path(item)
        if path.suffix == ".safetensors" and is_checkpoint(path):
            item = load_checkpoint(path).model
        else:
            item = read_tensors(path)
            if isinstance(item, nn.Module):
                item = {n: p.detach() for n, p in item.named_parameters()}
    if isinstance(item, nn.Module):
        src = {n: p.detach() for n, p in item.named_parameters()}
    elif isinstance(item, Mapping):
        src = dict(item)
    else:
        raise ConfigError(f"trajectory[{index}]: expected a model, a parameter dict or a "
                          f"checkpoint path, got {type(item).__name__}")
    out = {}
    for name, t in reference.items():
        if name not in src:
            raise ShapeError(f"trajectory[{index}]: parameter {name!r} of the model is missing")
        s = src[name]
        if tuple(s.shape) != tuple(t.shape):
            raise ShapeError(f"trajectory[{index}]: parameter {name!r} has shape "
                             f"{tuple(s.shape)}, the model's is {tuple(t.shape)}")
        out[name] = s.detach().to(t.device, t.dtype)
    return out


@dataclass
class PCADirections:
    """Top principal directions of a trajectory around its final point.

    Attributes:
        directions: unit-norm, mutually orthogonal parameter dicts.
        explained_variance: variance of the (centered) trajectory along each direction.
        explained_variance_ratio: its share of the total variance.
        coords: ``(len(trajectory), n)`` coordinates of ``theta_i - theta_final`` along the
            directions (the projected trajectory; the final point is the origin).
    """

    directions: list[Params]
    explained_variance: list[float]
    explained_variance_ratio: list[float]
    coords: list[list[float]] = field(default_factory=list)


def pca_directions(trajectory: Sequence, final: nn.Module | Mapping[str, Tensor], n: int = 2,
                   *, include_bias: bool = True, include_bn: bool = True) -> PCADirections:
    """PCA directions of ``{theta_i - theta_final}`` (Li et al. 2018, section 7).

    Args:
        trajectory: models / parameter dicts / checkpoint paths along training (at least
            ``n + 1`` distinct points besides ``final``; entries equal to ``final`` are used
            for the projection but not for the PCA).
        final: the end point (the surface's center).
        n: number of directions.
        include_bias, include_bn: with False, 1-D / BatchNorm parameters are left out of the
            PCA (zero in the directions), as the authors' ``--ignore biasbn``.

    The rows ``theta_i - theta_final`` are centered and decomposed by a thin SVD; a direction's
    sign is chosen so that the first trajectory point has a non-negative coordinate.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(trajectory, (str, Path, nn.Module, Mapping)) or not isinstance(
            trajectory, Sequence):
        raise ConfigError(f"trajectory must be a list of models, parameter dicts or checkpoint "
                          f"paths, got {type(trajectory).__name__}")
    ref = _params(final)
    bn_names = bn_parameter_names(final) if isinstance(final, nn.Module) else set()
    keep = [name for name, t in ref.items()
            if _kept(name, t, bn_names, include_bias, include_bn)]
    if not keep:
        raise ConfigError("no parameter left for the PCA (all excluded)")
    rows = []
    for i, item in enumerate(trajectory):
        p = trajectory_params(item, ref, i)
        rows.append(torch.cat([(p[k] - ref[k]).reshape(-1).double() for k in keep]))
    if not rows:
        raise ConfigError("trajectory is empty; pca-trajectory directions need a list of "
                          "models, parameter dicts or checkpoint paths")
    M = torch.stack(rows)
    used = M[M.abs().amax(dim=1) > 0]
    if used.shape[0] < n + 1:
        raise ConfigError(f"pca-trajectory with {n} direction(s) needs at least {n + 1} "
                          f"trajectory points different from the final model, got "
                          f"{used.shape[0]}")
    centered = used - used.mean(dim=0, keepdim=True)
    _, S, Vh = torch.linalg.svd(centered, full_matrices=False)
    var = S ** 2 / max(used.shape[0] - 1, 1)
    total = float(var.sum())
    if total <= 0 or float(S[n - 1]) <= 1e-5 * float(S[0]):
        raise ConfigError(f"the trajectory spans fewer than {n} dimension(s) "
                          f"(singular values {[float(s) for s in S[:n + 1]]})")
    comps = Vh[:n].clone()
    coords = M @ comps.T
    for j in range(n):
        nz = coords[:, j].abs() > 0
        if nz.any() and coords[nz, j][0] < 0:
            comps[j] = -comps[j]
            coords[:, j] = -coords[:, j]
    directions = []
    for j in range(n):
        d, i = {}, 0
        for name, t in ref.items():
            if name in keep:
                d[name] = comps[j, i:i + t.numel()].reshape(t.shape).to(t.device, t.dtype)
                i += t.numel()
            else:
                d[name] = torch.zeros_like(t)
        directions.append(d)
    return PCADirections(directions=directions,
                         explained_variance=[float(v) for v in var[:n]],
                         explained_variance_ratio=[float(v) / total for v in var[:n]],
                         coords=[[float(c) for c in row] for row in coords])
