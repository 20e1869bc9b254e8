"""Seeded subsets, label noise and standardization, checked against direct numpy."""
import numpy as np
import pytest

from deepscope.data.transforms import (corrupt_labels, feature_stats, random_indices,
                                       random_labels, rng_for, split_indices, standardize,
                                       stratified_indices)


def test_rng_streams_are_reproducible_and_independent():
    a = rng_for(3, "x").standard_normal(5)
    assert np.array_equal(a, rng_for(3, "x").standard_normal(5))
    assert not np.array_equal(a, rng_for(3, "y").standard_normal(5))
    assert not np.array_equal(a, rng_for(4, "x").standard_normal(5))


@pytest.mark.parametrize("n", [0, 1, 7, 50, 99, 100])
def test_stratified_indices_proportions(n):
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    idx = stratified_indices(labels, n, rng_for(0, "t"))
    assert idx.shape == (n,) and len(np.unique(idx)) == n
    assert np.all(np.diff(idx) > 0)  # source order
    counts = np.bincount(labels[idx], minlength=3)
    assert np.all(np.abs(counts - n * np.array([0.5, 0.3, 0.2])) < 1)


def test_split_and_random_indices_partition():
    labels = np.arange(40) % 4
    train, test = split_indices(labels, 40, 10, rng_for(1, "s"))
    assert len(train) == 30 and len(test) == 10
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(40))
    train, test = split_indices(None, 40, 10, rng_for(1, "s"))
    assert len(set(train) | set(test)) == 40
    assert np.array_equal(random_indices(9, 9, rng_for(0, "r")), np.arange(9))
    with pytest.raises(ValueError):
        random_indices(3, 4, rng_for(0, "r"))


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.99])
def test_corrupt_labels_exact_count_and_always_a_different_class(fraction):
    y = np.arange(333) % 5
    out = corrupt_labels(y, fraction, 5, rng_for(0, "n"))
    changed = out != y
    assert changed.sum() == round(fraction * 333)
    assert out.min() >= 0 and out.max() < 5
    assert np.array_equal(y, np.arange(333) % 5)  # input untouched
    if fraction > 0.2:  # the replacement class is roughly uniform over the other 4
        shift = (out[changed] - y[changed]) % 5
        assert set(shift.tolist()) == {1, 2, 3, 4}


def test_random_labels_uniform():
    y = random_labels(5000, 4, rng_for(0, "r"))
    assert y.dtype == np.int64
    freq = np.bincount(y, minlength=4) / 5000
    assert np.all(np.abs(freq - 0.25) < 0.03)


def test_feature_stats_match_numpy_across_chunks():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((9000, 3, 2)) * [[1.0, 5.0]] + 100.0).astype(np.float32)
    mean, std = feature_stats(x)
    ref = x.reshape(9000, -1).astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(0), rtol=1e-10)


def test_standardize_constant_features_and_shapes():
    rng = np.random.default_rng(1)
    x_train = rng.standard_normal((200, 2, 3)).astype(np.float32) * 3 + 1
    x_train[:, 0, 0] = 0.3  # constant, with a value that is not exact in binary
    x_train[:, 1, 2] = 0.0
    x_test = rng.standard_normal((50, 2, 3)).astype(np.float32)
    a, b, mean, scale = standardize(x_train, x_test)
    assert a.shape == x_train.shape and b.shape == x_test.shape and a.dtype == np.float32
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert np.all(np.abs(a[:, 0, 0]) < 1e-6) and np.all(a[:, 1, 2] == 0)
    flat = a.reshape(200, -1).astype(np.float64)
    varying = np.ones(6, bool)
    varying[[0, 5]] = False
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(flat.std(0)[varying], 1, atol=1e-5)
    expect = (x_test.reshape(50, -1) - mean) / scale
    np.testing.assert_allclose(b.reshape(50, -1), expect, atol=1e-5)
