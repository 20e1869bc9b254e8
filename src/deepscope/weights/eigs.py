"""Eigenvalues of weight matrices, fast: λ = σ²(W), pooled over a layer's slices.

Convention: the empirical spectral density of a layer is the eigenvalues of ``X = WᵀW`` for
each of its ``(N, M)`` slices (``N >= M``), i.e. ``λ_i = σ_i(W)²`` with *no* ``1/N`` factor
(weightwatcher's convention, Martin & Mahoney, JMLR 2021), all slices pooled and sorted
ascending: a layer gives ``num_matrices * M`` values, returned as float64 numpy arrays.

Speed: matrices of the same ``(N, M)`` (and device) are stacked across layers and solved in
one batched call, on the device the weights live on (the model's; ``device=`` overrides),
in ``dtype`` (float32 by default, float64 on request). Two solvers:

* ``"svd"``: ``torch.linalg.svdvals(W)``, squared. The absolute error of each ``σ`` is about
  ``eps·σ_max``, so λ near zero stay accurate down to ~``eps²·λ_max``.
* ``"gram"``: ``torch.linalg.eigvalsh(WᵀW)`` (``M x M``), clamped at 0. 2-5x faster on CPU
  (below), but forming the Gram squares the condition number: the absolute error is about
  ``eps·λ_max``. In float32 that is ~1e-7·λ_max, so eigenvalues below ~1e-5·λ_max lose their
  relative accuracy (a rank-deficient matrix shows noise instead of ~0); in float64 the error
  (~1e-15·λ_max) is below the float32 storage precision of typical weights.
* ``"auto"`` (default): Gram in float64; in float32 Gram only when ``N >= 4·M`` (a generic
  tall matrix has no eigenvalues near 0: the Marchenko-Pastur lower edge is >= λ+/9 at
  Q = 4), SVD otherwise. Everything used for HT-SR metrics (tail fit, norms, MP bulk) is far
  above the float32 Gram noise floor; to count near-zero eigenvalues of tall, rank-collapsed
  layers use ``dtype=torch.float64`` or ``method="svd"``.

Timings (CPU, torch 2.13, 1 thread, a shared and busy machine: min of 3 runs for 64 x 512²,
one run for 4096²; eigenvalues() on a batch of 64 512x512 / one 4096x4096 / one 4096x512):

=========================  ==========  =========  =========
solver                     64 x 512²   4096²      4096x512
=========================  ==========  =========  =========
float32 SVD (auto, Q < 4)  1.8 s       24.8 s     65 ms
float32 Gram               0.9 s       4.8 s      26 ms (auto)
float64 SVD                2.8 s       ~70 s      106 ms
float64 Gram (auto)        2.0 s       7.9 s      50 ms
scipy svdvals float64      2.3 s       27.2 s     136 ms
=========================  ==========  =========  =========

(4096x512 column: 2 threads on a quiet machine; float64 SVD of 4096² with 2 threads, busy.)
scipy float64 is weightwatcher's CPU path. On CPU the float64 Gram is about as fast as the
float32 SVD and far more accurate: prefer ``dtype=torch.float64`` there when in doubt.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from deepscope.errors import ConfigError, ShapeError, unknown_name
from deepscope.weights.matrices import LayerMatrices

__all__ = ["eigenvalues", "randomize_matrix", "EIG_METHODS"]

EIG_METHODS = ("auto", "svd", "gram")
GRAM_RATIO = 4  # "auto" in float32 uses the Gram when N >= GRAM_RATIO * M
_CHUNK_ELEMENTS = 1 << 25  # ~128 MiB of float32 per batched call


def _use_gram(n: int, m: int, dtype: torch.dtype, method: str) -> bool:
    if method != "auto":
        return method == "gram"
    return dtype == torch.float64 or n >= GRAM_RATIO * m


def _solve(stack: Tensor, method: str) -> np.ndarray:
    """Eigenvalues (B, M) of the (B, N, M) stack, float64 numpy, each row ascending."""
    _, n, m = stack.shape
    if _use_gram(n, m, stack.dtype, method):
        ev = torch.linalg.eigvalsh(stack.mT @ stack).clamp_min_(0)
    else:
        s = torch.linalg.svdvals(stack)
        ev = (s * s).flip(-1)
    return ev.to("cpu", torch.float64).numpy()


def _rows(layers) -> list[LayerMatrices]:
    if isinstance(layers, LayerMatrices):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise ConfigError("layers must be a list of LayerMatrices, got "
                          f"{type(layers).__name__}")
    rows, seen = [], set()
    for r in layers:
        if not isinstance(r, LayerMatrices):
            raise ConfigError(f"layers must hold LayerMatrices, got {type(r).__name__}")
        if r.skipped:
            continue
        if r.name in seen:
            raise ConfigError(f"duplicate layer name {r.name!r}: expected unique names")
        seen.add(r.name)
        rows.append(r)
    return rows


def eigenvalues(layers: Iterable[LayerMatrices], *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None, batch: bool = True,
                method: str = "auto") -> dict[str, np.ndarray]:
    """Eigenvalues ``λ = σ²`` of every analyzed layer's matrices, pooled and sorted ascending.

    Args:
        layers: rows from :func:`~deepscope.weights.matrices.module_matrices` (or
            ``iter_layer_matrices``); skipped rows are ignored.
        dtype: compute precision, ``torch.float32`` (default) or ``torch.float64``.
        device: where to compute; None = where each layer's weights are.
        batch: stack same-shape matrices across layers into one call (False: one call per
            matrix; same numbers up to rounding).
        method: ``"auto"``, ``"svd"`` or ``"gram"`` (see the module docstring).

    Returns:
        ``{row name: float64 array of num_matrices * M eigenvalues}``, in input order.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    if method not in EIG_METHODS:
        raise unknown_name("eigenvalue method", method, EIG_METHODS)
    dev = None if device is None else torch.device(device)
    rows = _rows(layers)
    parts: dict[str, list[np.ndarray]] = {r.name: [] for r in rows}
    groups: dict[tuple, list[tuple[str, Tensor]]] = defaultdict(list)
    for r in rows:
        mats = r.matrices
        if mats.shape[1:] != (r.N, r.M):
            raise ShapeError(f"layer {r.name!r}: expected matrices of shape (k, {r.N}, {r.M}), "
                             f"got {tuple(mats.shape)}")
        target = dev if dev is not None else mats.device
        if not batch:
            for w in mats:
                parts[r.name].append(_solve(w.to(target, dtype).unsqueeze(0), method))
            continue
        groups[(r.N, r.M, target)].append((r.name, mats))
    with torch.no_grad():
        for (n, m, target), items in groups.items():
            for chunk in _chunks(items, n * m):
                stack = torch.cat([w.to(target, dtype) for _, w in chunk])
                ev = _solve(stack, method)
                i = 0
                for name, w in chunk:
                    parts[name].append(ev[i:i + w.shape[0]])
                    i += w.shape[0]
                del stack
    return {name: np.sort(np.concatenate(p, axis=None)) for name, p in parts.items()}


def _chunks(items: list, per_matrix: int):
    chunk, size = [], 0
    for item in items:
        k = item[1].shape[0] * per_matrix
        if chunk and size + k > _CHUNK_ELEMENTS:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += k
    if chunk:
        yield chunk


def randomize_matrix(W: Tensor, generator: torch.Generator | int) -> Tensor:
    """Element-wise shuffle of ``W`` (a new tensor; ``W`` is untouched).

    weightwatcher's ``randomize`` option: the shuffled matrix keeps the entry distribution but
    destroys correlations, so its ESD is Marchenko-Pastur-like; large eigenvalues that survive
    in it (outliers of the randomized ESD) signal correlation traps. A stack ``(..., N, M)`` is
    shuffled within each matrix, as weightwatcher shuffles each slice. ``generator`` is a
    ``torch.Generator`` or an int seed: the same seed gives the same shuffle on CPU.
    """
    if not isinstance(W, Tensor):
        raise ConfigError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if W.ndim < 2:
        raise ShapeError(f"W must be a matrix or a stack of matrices (ndim >= 2), got shape "
                         f"{tuple(W.shape)}")
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise ConfigError("generator must be a torch.Generator or an int seed, got "
                          f"{type(generator).__name__}")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    lead, inner = W.shape[:-2], W.shape[-2] * W.shape[-1]
    flat = W.detach().reshape(-1, inner)
    keys = torch.rand(flat.shape[0], inner, generator=generator, device=generator.device)
    perm = keys.argsort(dim=1).to(W.device)
    return flat.gather(1, perm).reshape(*lead, *W.shape[-2:])
