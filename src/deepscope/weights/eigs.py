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
* ``"auto"`` (default): the Gram path. The HT-SR quantities (tail fit, norms, MP bulk
  quantiles, spikes) live far above the float32 Gram noise floor (~1e-7·λ_max), which is why
  float32 is the default; what the floor does touch is the very bottom of a square layer's
  spectrum (the MP law at Q = 1 reaches 0: about 0.1 % of its eigenvalues lie below
  2e-6·λ_max) and near-zero eigenvalues of rank-deficient layers, which come out as noise
  of that size instead of ~0 (the rank-collapse rule allows for it). For those use
  ``dtype=torch.float64`` (Gram, error ~1e-15·λ_max) or ``method="svd"``. Tests check the
  top of every spectrum and the whole spectrum relative to λ_max against float64 numpy SVD.

Timings (CPU, torch 2.13 with MKL, 2 threads; best of 3; see also
``benchmarks/spectra_vs_weightwatcher.py``):

====================  ===========  ===========  ==========  ============  ===========
solver                24 x 256²    24 x 768²    6 x 3072x768  30522x768   4096²
====================  ===========  ===========  ==========  ============  ===========
float32 SVD           0.091 s      1.05 s       0.59 s      0.55 s        8.3 s
float32 Gram (auto)   0.042 s      0.61 s       0.24 s      0.21 s        2.3 s
float64 Gram          0.085 s      1.27 s       0.49 s      0.58 s        3.9 s
====================  ===========  ===========  ==========  ============  ===========

scipy's float64 ``svdvals`` (weightwatcher's CPU path) takes about as long as the float64
SVD and more than the float64 Gram.
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
_CHUNK_ELEMENTS = 1 << 25  # ~128 MiB of float32 per batched call


_SYRK_MIN_FLOPS = 1 << 24


def gram_matrices(w: Tensor) -> Tensor:
    """``WᵀW`` for a stack ``(k, N, M)``; only the upper triangle is guaranteed (read it with
    ``UPLO="U"``).

    On CPU, large matrices go through BLAS ``?syrk`` (scipy's), which computes one triangle
    of the product and so needs half the flops of a general matrix product (a 25088x4096
    float32 Gram: 2.4 s instead of 5.2 s on 2 cores); small ones and other devices use one
    batched ``matmul``.
    """
    k, n, m = w.shape
    if w.device.type != "cpu" or n * m * m < _SYRK_MIN_FLOPS:
        return w.mT @ w
    from scipy.linalg import blas
    syrk = blas.ssyrk if w.dtype == torch.float32 else blas.dsyrk
    out = torch.empty(k, m, m, dtype=w.dtype)
    for i in range(k):
        a = w[i].numpy()
        if a.flags.c_contiguous:        # a.T is Fortran-ordered (M, N): C = a.T @ a.T^T
            g = syrk(1.0, a.T, trans=0, lower=0)
        else:                           # Fortran-ordered (N, M), or a copy: C = a^T a
            g = syrk(1.0, np.asfortranarray(a), trans=1, lower=0)
        out[i] = torch.from_numpy(g)
    return out


_PARALLEL_MAX_M = 2048


def _batched_eigvalsh(stack: Tensor) -> Tensor:
    """``eigvalsh`` (upper triangle) of a ``(B, M, M)`` stack.

    On CPU, LAPACK's threading is inefficient for small matrices: for M <= 2048 the batch is
    split across as many Python threads as torch has intra-op threads, each solving its part
    single-threaded (torch releases the GIL), which is ~1.6x faster on 2 cores for a batch of
    512x512; the thread setting is restored afterwards.
    """
    threads = torch.get_num_threads()
    b, m, _ = stack.shape
    if stack.device.type != "cpu" or threads < 2 or b < 2 or m > _PARALLEL_MAX_M:
        return torch.linalg.eigvalsh(stack, UPLO="U")
    from concurrent.futures import ThreadPoolExecutor
    parts = torch.tensor_split(stack, min(threads, b))
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            out = list(pool.map(lambda g: torch.linalg.eigvalsh(g, UPLO="U"), parts))
    finally:
        torch.set_num_threads(threads)
    return torch.cat(out)


def _use_gram(n: int, m: int, dtype: torch.dtype, method: str) -> bool:
    return method in ("auto", "gram")


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
        batch: solve matrices together across layers: with the Gram path every matrix of
            the same M (any N) joins one batched ``eigvalsh`` of the M x M Grams; with SVD,
            matrices of the same (N, M). False: one call per matrix (same numbers up to
            rounding).
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
    gram = _use_gram(0, 0, dtype, method)
    # Gram path: WᵀW is M x M whatever N is, so every matrix with the same M (and device)
    # joins one batched eigvalsh; the Grams are formed one layer at a time (no copy of the
    # weights into a stack). SVD path: batch by the full shape (N, M).
    groups: dict[tuple, list[tuple[str, Tensor]]] = defaultdict(list)
    sizes: dict[tuple, int] = defaultdict(int)

    def flush(key) -> None:
        items = groups.pop(key, [])
        sizes.pop(key, None)
        if not items:
            return
        stack = torch.cat([t for _, t in items])
        if gram:
            ev = _batched_eigvalsh(stack).clamp_min_(0).to("cpu", torch.float64).numpy()
        else:
            ev = _solve(stack, method)
        i = 0
        for name, t in items:
            parts[name].append(ev[i:i + t.shape[0]])
            i += t.shape[0]

    with torch.no_grad():
        for r in rows:
            mats = r.matrices
            if mats.shape[1:] != (r.N, r.M):
                raise ShapeError(f"layer {r.name!r}: expected matrices of shape (k, {r.N}, "
                                 f"{r.M}), got {tuple(mats.shape)}")
            target = dev if dev is not None else mats.device
            w = mats.to(target, dtype)
            if not batch:
                for one in w:
                    parts[r.name].append(_solve(one.unsqueeze(0), method))
                continue
            item = gram_matrices(w) if gram else w
            key = (r.M, target) if gram else (r.N, r.M, target)
            groups[key].append((r.name, item))
            sizes[key] += item.numel()
            if sizes[key] > _CHUNK_ELEMENTS:
                flush(key)
        for key in list(groups):
            flush(key)
    return {name: np.sort(np.concatenate(p, axis=None)) for name, p in parts.items()}


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
