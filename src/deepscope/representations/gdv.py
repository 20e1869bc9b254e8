"""The Generalized Discrimination Value (GDV) of a layer's representation.

Schilling, Maier, Gerum, Metzner & Krauss, "Quantifying the separability of data classes in
neural networks", Neural Networks 139 (2021; arXiv 2018 "How deep is deep enough?"). For N
points x_n in R^D with class labels:

1. z-score every dimension over all N points and halve: s_nd = (x_nd - μ_d) / (2 σ_d), with
   σ_d the population standard deviation (numpy's ``std``, ddof = 0);
2. intra(c) = mean Euclidean distance ||s_i - s_j|| over pairs of distinct points i ≠ j of
   class c;  inter(c, c') = mean distance over all pairs (i in c, j in c');
3. GDV = (1 / sqrt(D)) · ( mean_c intra(c) − mean_{c < c'} inter(c, c') ).

More negative means better separated classes (−1 .. 0 typical; shuffled labels give ~0).
Constant dimensions (σ_d = 0, every point equal) are mapped to 0, as in the authors' reference
code (``zScoreSpecial`` replaces the resulting NaNs by 0), and still count in D; the number of
such dimensions is reported (``num_constant``). Reported ``intra_mean`` / ``inter_mean`` carry
the 1/sqrt(D) factor too (as in the reference code), so ``gdv = intra_mean − inter_mean``.

Cost O(N² D): distances are summed block by block with a matrix-product formula in float64
(``block_size`` rows at a time, so memory is O(block_size² + N D)); pairs whose squared distance
is below 1e-4 of the squared norms (near-duplicates, where the product formula loses digits)
are recomputed from differences, so the result matches the direct formula to ~1e-12. For large
N, ``max_per_class`` draws a seeded random subset of each class.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, DataError, ShapeError
from deepscope.representations.activations import (INPUT_LAYER, capture_activations,
                                                   layer_types, resolve_data)
from deepscope.result import Result
from deepscope._precision import ieee_float32

__all__ = ["gdv", "gdv_of", "gdv_probe", "GDVStats", "GDVResult", "GDV_COLUMNS",
           "subsample_per_class", "first_local_minimum"]

#: Table columns of :class:`GDVResult`, in order (names never change).
GDV_COLUMNS = ("layer", "type", "index", "dim", "n", "gdv", "intra_mean", "inter_mean",
               "num_constant")
_NEAR = 1e-4
_PAIR_CHUNK = 1 << 16


@dataclass
class GDVStats:
    """GDV of one point cloud (all distances already carry the 1/sqrt(D) factor).

    Attributes:
        gdv: intra_mean − inter_mean.
        intra_mean: mean over classes of intra(c) / sqrt(D).
        inter_mean: mean over class pairs c < c' of inter(c, c') / sqrt(D).
        dim: D; n: number of points; num_constant: dimensions with σ = 0.
        classes: the class labels, sorted; counts: points per class.
        intra: per class, intra(c) / sqrt(D); inter: C x C matrix of inter(c, c') / sqrt(D)
            (diagonal = intra).
    """

    gdv: float
    intra_mean: float
    inter_mean: float
    dim: int
    n: int
    num_constant: int
    classes: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    intra: np.ndarray = field(repr=False)
    inter: np.ndarray = field(repr=False)


def _check_int(name: str, value, low: int, *, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, "
                          f"got {value!r}")
    return int(value)


def _labels(y, n: int) -> np.ndarray:
    if y is None:
        raise DataError("GDV needs class labels; got inputs without labels")
    arr = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ShapeError(f"labels must have shape ({n},), got {tuple(arr.shape)} (GDV needs "
                         f"one class label per point; regression targets do not work)")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise DataError(f"labels must be integer class labels, got dtype {arr.dtype}")
    return arr


def subsample_per_class(y, max_per_class: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices keeping at most ``max_per_class`` points of each class.

    A class with more points keeps a uniformly random subset drawn with
    ``numpy.random.default_rng(seed)`` (classes visited in sorted order); None keeps all.
    """
    y = np.asarray(y)
    if max_per_class is None:
        return np.arange(y.shape[0])
    max_per_class = _check_int("max_per_class", max_per_class, 2)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size > max_per_class:
            idx = rng.choice(idx, size=max_per_class, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def _distances(a: Tensor, b: Tensor, na: Tensor, nb: Tensor) -> Tensor:
    """Euclidean distances between rows (float64), product formula + exact near pairs."""
    d2 = (na[:, None] + nb[None, :] - 2.0 * (a @ b.T)).clamp_(min=0.0)
    near = d2 <= _NEAR * (na[:, None] + nb[None, :])
    if bool(near.any()):
        i, j = near.nonzero(as_tuple=True)
        for s in range(0, i.numel(), _PAIR_CHUNK):
            ii, jj = i[s:s + _PAIR_CHUNK], j[s:s + _PAIR_CHUNK]
            d2[ii, jj] = (a[ii] - b[jj]).pow(2).sum(1)
    return d2.sqrt_()


def _distance_sum(a: Tensor, b: Tensor | None, block: int) -> float:
    """Sum of ||a_i − b_j|| over all (i, j); with ``b=None``, over ordered pairs i ≠ j of a."""
    same = b is None
    b = a if same else b
    na, nb = (a * a).sum(1), (b * b).sum(1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], block):
        j0 = i if same else 0
        for j in range(j0, b.shape[0], block):
            d = _distances(a[i:i + block], b[j:j + block], na[i:i + block], nb[j:j + block])
            if same and i == j:
                d.fill_diagonal_(0.0)
                total += d.sum()
            else:
                total += d.sum() * (2.0 if same else 1.0)
    return float(total)


def _zscore_half(x: Tensor) -> tuple[Tensor, int]:
    """s = (x − μ) / (2σ) per column (σ: ddof 0); constant columns -> 0. Returns (s, #const)."""
    const = (x == x[:1]).all(0)
    mu = x.mean(0)
    sd = x.std(0, unbiased=False)
    const |= sd == 0
    s = (x - mu) / (2.0 * torch.where(const, torch.ones_like(sd), sd))
    s[:, const] = 0.0
    return s, int(const.sum())


def gdv_of(x, y, *, max_per_class: int | None = None, seed: int = 0,
           block_size: int = 1024) -> GDVStats:
    """GDV of raw points ``x`` (``(N, ...)``, flattened per point) with class labels ``y``.

    Computed in float64 on ``x``'s device. Every class needs at least 2 points and there must
    be at least 2 classes (else :class:`DataError`). ``max_per_class``/``seed``: see
    :func:`subsample_per_class`.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ConfigError(f"x must be a tensor or an array, got {type(x).__name__}")
    if x.dim() < 1:
        raise ShapeError(f"x must have shape (N, ...), got {tuple(x.shape)}")
    block_size = _check_int("block_size", block_size, 1)
    n = int(x.shape[0])
    labels = _labels(y, n)
    keep = subsample_per_class(labels, max_per_class, seed)
    if keep.size != n:
        x = x[torch.as_tensor(keep, device=x.device)]
        labels = labels[keep]
        n = int(keep.size)
    x = x.reshape(n, -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise DataError("x contains NaN or infinite values")
    dim = int(x.shape[1])
    if dim == 0:
        raise ShapeError("x has zero features per point")
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size < 2:
        raise DataError(f"GDV needs at least 2 classes, got {classes.size}")
    if counts.min() < 2:
        bad = {int(c): int(k) for c, k in zip(classes, counts) if k < 2}
        raise DataError(f"GDV needs at least 2 points per class (intra-class pairs); classes "
                        f"with fewer: {bad}")
    s, n_const = _zscore_half(x)
    groups = [s[torch.as_tensor(np.flatnonzero(labels == c), device=s.device)]
              for c in classes]
    k = len(groups)
    inter = np.zeros((k, k))
    for a in range(k):
        na = groups[a].shape[0]
        inter[a, a] = _distance_sum(groups[a], None, block_size) / (na * (na - 1))
        for b in range(a + 1, k):
            inter[a, b] = inter[b, a] = (_distance_sum(groups[a], groups[b], block_size)
                                         / (na * groups[b].shape[0]))
    scale = 1.0 / math.sqrt(dim)
    inter *= scale
    intra = np.diag(inter).copy()
    intra_mean = float(intra.mean())
    inter_mean = float(inter[np.triu_indices(k, 1)].mean())
    return GDVStats(gdv=intra_mean - inter_mean, intra_mean=intra_mean, inter_mean=inter_mean,
                    dim=dim, n=n, num_constant=n_const, classes=classes, counts=counts,
                    intra=intra, inter=inter)


@dataclass(repr=False)
class GDVResult(Result):
    """:class:`~deepscope.result.Result` of :func:`gdv` plus per-layer :class:`GDVStats`."""

    stats: dict[str, GDVStats] = field(default_factory=dict)

    def gdv_by_layer(self) -> pd.Series:
        """GDV per layer, in layer order."""
        return self.table.set_index("layer")["gdv"]


def first_local_minimum(values) -> int:
    """Index of the first value not larger than its successor (where a curve stops falling)."""
    v = list(values)
    for i in range(len(v) - 1):
        if v[i] <= v[i + 1]:
            return i
    return len(v) - 1


@ieee_float32
def gdv(model: nn.Module, data, layers=None, *, split: str = "train",
        max_per_class: int | None = None, seed: int = 0, include_input: bool = True,
        batch_size: int = 512, block_size: int = 1024, device=None,
        progress: bool = True) -> GDVResult:
    """GDV of every chosen layer's representation of labelled data (Schilling et al.).

    Args:
        model: an ``nn.Module`` (never mutated; run in eval mode without gradients).
        data: a deepscope Dataset (its ``split``) or an ``(x, y)`` pair with class labels.
        layers: capture points (:mod:`deepscope.representations.activations`); None: the
            defaults (every hidden block, then the output).
        split: ``"train"`` or ``"test"`` (Dataset only).
        max_per_class: keep at most this many points per class (seeded random subset, the
            same points for every layer); None keeps all.
        seed: seeds that subset.
        include_input: add the raw inputs as layer ``"input"`` (index 0).
        batch_size: samples per forward pass; block_size: rows per distance block.
        device: where to run (None: the model's device).
        progress: progress bar over layers.

    Returns:
        :class:`GDVResult`: one row per layer (``GDV_COLUMNS``); summary with the best
        (most negative) layer, the output layer's GDV and where the GDV stops improving.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    max_per_class = _check_int("max_per_class", max_per_class, 2, optional=True)
    x, y = resolve_data(data, split)
    labels = _labels(y, int(x.shape[0]))
    keep = subsample_per_class(labels, max_per_class, seed)
    x, labels = x[torch.as_tensor(keep)], labels[keep]
    t0 = time.perf_counter()
    acts = capture_activations(model, x, layers, batch_size=batch_size, device=device,
                               include_input=include_input)
    types = layer_types(model, layers)
    rows, stats = [], {}
    for i, (name, a) in enumerate(progress_bar(list(acts.items()), enabled=progress,
                                               desc="GDV", unit="layer")):
        try:
            st = gdv_of(a, labels, block_size=block_size)
        except DataError as e:  # e.g. NaN activations: say which layer
            raise DataError(f"layer {name!r}: {e}") from None
        stats[name] = st
        rows.append({"layer": name, "type": types.get(name, ""),
                     "index": i if include_input else i + 1, "dim": st.dim, "n": st.n,
                     "gdv": st.gdv, "intra_mean": st.intra_mean, "inter_mean": st.inter_mean,
                     "num_constant": st.num_constant})
    table = pd.DataFrame(rows, columns=list(GDV_COLUMNS))
    layers_only = table[table["layer"] != INPUT_LAYER] if include_input else table
    best = table.loc[table["gdv"].idxmin()]
    turn = layers_only.iloc[first_local_minimum(layers_only["gdv"])]
    out_row = table.iloc[-1]
    summary = {
        "num_layers": int(len(layers_only)),
        "n": int(labels.size),
        "num_classes": int(np.unique(labels).size),
        "best_layer": str(best["layer"]),
        "best_index": int(best["index"]),
        "best_gdv": float(best["gdv"]),
        "stops_improving_at": str(turn["layer"]),
        "output_layer": str(out_row["layer"]),
        "output_gdv": float(out_row["gdv"]),
        "input_gdv": float(table.iloc[0]["gdv"]) if include_input else math.nan,
        "time_s": time.perf_counter() - t0,
    }
    settings = {"layers": None if layers is None else [str(l) for l in (
                    [layers] if isinstance(layers, (str, type)) else layers)],
                "split": split, "max_per_class": max_per_class, "seed": seed,
                "include_input": include_input, "batch_size": batch_size,
                "block_size": block_size, "device": None if device is None else str(device)}
    return GDVResult(kind="gdv", table=table, summary=summary, settings=settings, stats=stats)


def gdv_probe(checkpoint, **options):
    """Sweep probe ``"gdv"`` (:mod:`deepscope.sweep.probes`): :func:`gdv` of a checkpoint on
    the dataset it was trained on, ``progress`` forced off."""
    from deepscope.train.checkpoint import load_checkpoint
    ck = load_checkpoint(checkpoint)
    options["progress"] = False
    return gdv(ck.model, ck.dataset(), **options)
