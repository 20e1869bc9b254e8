"""Seeded transforms shared by every dataset: random streams, subsets, label noise, scaling.

- ``rng_for(seed, stream)``: an independent numpy ``Generator`` per named purpose, so that
  changing, say, the label-noise fraction never changes which examples form the split.
- ``stratified_indices`` / ``random_indices``: seeded subsets (class proportions kept by
  largest-remainder allocation for classification), returned in the source order.
- ``corrupt_labels``: label noise as in Zhang et al., "Understanding deep learning requires
  rethinking generalization" (ICLR 2017): exactly ``round(fraction * n)`` train labels, chosen
  at random, are replaced by a uniformly drawn *different* class.
- ``random_labels``: the fully randomized labels of the same paper (every label uniform over
  the classes, independent of the input).
- ``standardize``: per-feature z-scoring ``(x - mean) / std`` with statistics of the train
  split only; a feature whose train std is (numerically) zero is only centred, so constant
  pixels become 0 instead of NaN.
"""
from __future__ import annotations

import zlib

import numpy as np

from deepscope.errors import ConfigError, ShapeError

__all__ = ["rng_for", "stratified_indices", "random_indices", "split_indices",
           "corrupt_labels", "random_labels", "standardize", "feature_stats"]

_STATS_CHUNK = 4096


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent PCG64 generator for ``(seed, stream)``; stable across processes."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode("utf-8"))])


def _largest_remainder(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over groups proportionally to ``counts`` (Hamilton's method)."""
    quota = counts * (n / counts.sum())
    base = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - base), kind="stable")
    base[order[: n - int(base.sum())]] += 1  # +1 only where quota > floor, so <= counts
    return base


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted indices into ``labels``, each class represented in proportion to its size."""
    labels = np.asarray(labels)
    if not 0 <= n <= labels.shape[0]:
        raise ConfigError(f"cannot take {n} of {labels.shape[0]} examples")
    classes, counts = np.unique(labels, return_counts=True)
    quota = _largest_remainder(counts, n)
    chosen = []
    for cls, q in zip(classes, quota):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.permutation(members)[:q])
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return np.sort(picked)


def random_indices(n_pool: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted indices drawn without replacement from ``range(n_pool)``."""
    if not 0 <= n <= n_pool:
        raise ConfigError(f"cannot take {n} of {n_pool} examples")
    if n == n_pool:
        return np.arange(n_pool)
    return np.sort(rng.permutation(n_pool)[:n])


def split_indices(labels: np.ndarray | None, n_pool: int, n_test: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train, test)`` index split of a pool; stratified when labels are given."""
    test = (stratified_indices(labels, n_test, rng) if labels is not None
            else random_indices(n_pool, n_test, rng))
    mask = np.ones(n_pool, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def corrupt_labels(y: np.ndarray, fraction: float, num_classes: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Copy of ``y`` with exactly ``round(fraction * n)`` labels moved to a different class.

    The changed positions are a uniform random subset; each new label is
    ``(y + s) mod num_classes`` with ``s`` uniform on ``{1, ..., num_classes - 1}``, i.e. a
    uniformly drawn class other than the true one (Zhang et al., ICLR 2017).
    """
    n = y.shape[0]
    k = int(round(fraction * n))
    out = y.copy()
    if k == 0:
        return out
    if num_classes < 2:
        raise ConfigError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    idx = rng.permutation(n)[:k]
    shift = rng.integers(1, num_classes, size=k)
    out[idx] = (y[idx] + shift) % num_classes
    return out


def random_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels drawn i.i.d. uniformly from ``range(num_classes)`` (Zhang et al. 2017)."""
    return rng.integers(0, num_classes, size=n).astype(np.int64)


def feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and population std of ``x`` (rows = examples), in float64.

    Accumulated over row chunks so that a float32 array of CIFAR size is never copied to
    float64 as a whole; the two-pass form ``mean((x - mean)^2)`` avoids cancellation.
    """
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[0]
    if n == 0:
        raise ShapeError("cannot standardize: expected at least 1 training example, got 0")
    total = np.zeros(flat.shape[1], dtype=np.float64)
    for i in range(0, n, _STATS_CHUNK):
        total += flat[i:i + _STATS_CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros_like(mean)
    for i in range(0, n, _STATS_CHUNK):
        d = flat[i:i + _STATS_CHUNK].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", d, d)
    return mean, np.sqrt(sq / n)


def standardize(x_train: np.ndarray, x_test: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Z-score both splits with the train split's per-feature mean and std.

    Returns float32 ``(x_train, x_test, mean, scale)``; ``scale`` is the std where it exceeds
    ``1e-8 * (1 + |mean|)`` and 1 elsewhere, so zero-variance features map to 0, not NaN.
    """
    mean, std = feature_stats(x_train)
    scale = np.where(std > 1e-8 * (1.0 + np.abs(mean)), std, 1.0)
    shape = x_train.shape[1:]
    m32 = mean.astype(np.float32).reshape(shape)
    s32 = scale.astype(np.float32).reshape(shape)
    out = []
    for x in (x_train, x_test):
        z = np.array(x, dtype=np.float32, copy=True)
        z -= m32
        z /= s32
        out.append(z)
    return out[0], out[1], mean, scale
