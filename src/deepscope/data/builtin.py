"""Small real(istic) classification datasets that need no download: digits and MNIST-1D.

``digits``
    The UCI optical-recognition handwritten digits as bundled with scikit-learn
    (``sklearn.datasets.load_digits``; Alpaydin & Kaynak 1998): 1797 grey 8x8 images with
    pixel counts 0..16, 10 classes. Pixels are scaled to [0, 1] (divided by 16). The test
    split is a seeded, class-stratified draw of ``n_test`` images (default 360); the train
    split is the rest, or a seeded stratified subset of it of size ``n_train``.
    Key ``flat`` (default True): inputs of shape (n, 64), else (n, 1, 8, 8).

``mnist1d``
    MNIST-1D of Greydanus, "Scaling down deep learning" (2020), produced by the ``mnist1d``
    package's own generator (``mnist1d.data.make_dataset``, run locally; the download path of
    that package is never used). Each example is a 40-sample 1-D signal made from one of ten
    digit templates by padding, dilation, scaling, translation, correlated + i.i.d. noise
    and shear; the generator centres and scales the whole set. Keys ``num_samples``
    (default 5000) and ``train_split`` (default 0.8) are the generator's, giving 4000 train
    and 1000 test signals; the generator's seed is the spec ``seed``. ``n_train``/``n_test``
    take seeded stratified subsets of those splits. ``flat`` (default True): (n, 40), else
    (n, 1, 40).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import numpy as np

from deepscope.data._spec import (DatasetDef, Splits, check_bool, check_float, check_int)
from deepscope.data.transforms import rng_for, split_indices, stratified_indices
from deepscope.errors import ConfigError

__all__ = ["DIGITS", "MNIST1D", "mnist1d_arrays"]

_DIGITS_SIZE = 1797


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digit images in [0, 1] as (n, 8, 8) float32 and their int64 labels (read-only)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float64) / 16.0).astype(np.float32)
    target = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    target.setflags(write=False)
    return images, target


def _check_fits(spec: dict[str, Any], key: str, available: int, what: str) -> None:
    if spec[key] is not None and spec[key] > available:
        raise ConfigError(f"dataset {spec['name']!r}: {key} must be <= {available} "
                          f"({what}), got {spec[key]}")


def _complete_digits(spec: dict[str, Any]) -> None:
    check_bool(spec, "flat")
    n_test = spec["n_test"]
    _check_fits(spec, "n_test", _DIGITS_SIZE - 1, f"digits has {_DIGITS_SIZE} images")
    _check_fits(spec, "n_train", _DIGITS_SIZE - n_test,
                f"{_DIGITS_SIZE} images minus n_test={n_test}")


def _build_digits(spec: dict[str, Any]) -> Splits:
    images, target = _digits_arrays()
    train, test = split_indices(target, target.shape[0], spec["n_test"],
                                rng_for(spec["seed"], "digits/split"))
    if spec["n_train"] is not None:
        keep = stratified_indices(target[train], spec["n_train"],
                                  rng_for(spec["seed"], "digits/train-subset"))
        train = train[keep]
    shape = (-1, 64) if spec["flat"] else (-1, 1, 8, 8)
    return Splits(x_train=images[train].reshape(shape), y_train=target[train].copy(),
                  x_test=images[test].reshape(shape), y_test=target[test].copy(),
                  task="classification", num_classes=10)


DIGITS = DatasetDef(
    name="digits",
    summary="sklearn 8x8 handwritten digits, 1797 images, 10 classes",
    defaults={"n_test": 360, "flat": True},
    complete=_complete_digits,
    task=lambda spec: "classification",
    build=_build_digits,
)


def mnist1d_arrays(seed: int, num_samples: int = 5000, train_split: float = 0.8
                   ) -> dict[str, np.ndarray]:
    """Run the ``mnist1d`` generator with its default arguments but the given seed and sizes.

    Returns ``{"x", "y", "x_test", "y_test"}`` (float64 signals, int64 labels). The generator
    seeds Python's and numpy's *global* generators; both states are saved before and
    restored after, so calling this leaves the caller's random streams untouched.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


@lru_cache(maxsize=4)
def _mnist1d_cached(seed: int, num_samples: int, train_split: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = mnist1d_arrays(seed, num_samples, train_split)
    out = (data["x"].astype(np.float32), data["y"].astype(np.int64),
           data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))
    for arr in out:
        arr.setflags(write=False)
    return out


def _mnist1d_sizes(spec: dict[str, Any]) -> tuple[int, int]:
    n_gen = 10 * (spec["num_samples"] // 10)
    n_train = int(n_gen * spec["train_split"])
    return n_train, n_gen - n_train


def _complete_mnist1d(spec: dict[str, Any]) -> None:
    check_bool(spec, "flat")
    num = check_int(spec, "num_samples", minimum=20)
    if num % 10:
        raise ConfigError(f"dataset 'mnist1d': num_samples must be a multiple of 10 (the "
                          f"generator makes num_samples // 10 signals per class), got {num}")
    check_float(spec, "train_split", low=0.0, high=1.0, low_open=True, high_open=True)
    pool_train, pool_test = _mnist1d_sizes(spec)
    if pool_train < 1 or pool_test < 1:
        raise ConfigError(f"dataset 'mnist1d': num_samples={num} with train_split="
                          f"{spec['train_split']} gives {pool_train} train and {pool_test} "
                          f"test signals; expected at least 1 of each")
    _check_fits(spec, "n_train", pool_train, "the generator's train split")
    _check_fits(spec, "n_test", pool_test, "the generator's test split")


def _build_mnist1d(spec: dict[str, Any]) -> Splits:
    x, y, x_test, y_test = _mnist1d_cached(spec["seed"], spec["num_samples"],
                                           spec["train_split"])
    train = np.arange(x.shape[0])
    test = np.arange(x_test.shape[0])
    if spec["n_train"] is not None:
        train = stratified_indices(y, spec["n_train"], rng_for(spec["seed"], "mnist1d/train"))
    if spec["n_test"] is not None:
        test = stratified_indices(y_test, spec["n_test"], rng_for(spec["seed"], "mnist1d/test"))
    length = x.shape[1]
    shape = (-1, length) if spec["flat"] else (-1, 1, length)
    return Splits(x_train=x[train].reshape(shape), y_train=y[train].copy(),
                  x_test=x_test[test].reshape(shape), y_test=y_test[test].copy(),
                  task="classification", num_classes=10)


MNIST1D = DatasetDef(
    name="mnist1d",
    summary="MNIST-1D (Greydanus 2020): 40-sample signals, 10 classes, 4000/1000 split",
    defaults={"flat": True, "num_samples": 5000, "train_split": 0.8},
    complete=_complete_mnist1d,
    task=lambda spec: "classification",
    build=_build_mnist1d,
)
