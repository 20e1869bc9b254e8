"""digits (sklearn) and MNIST-1D (the mnist1d generator)."""
import random

import numpy as np
import pytest
import torch

from deepscope.data import load_dataset
from deepscope.data.builtin import mnist1d_arrays


def test_digits_default_split():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.num_classes == 10 and ds.task == "classification"
    assert ds.input_shape == (64,) and ds.num_outputs == 10
    # stratified: every class has 35..37 of the 360 test images (class sizes 174..183)
    counts = torch.bincount(ds.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37


def test_digits_images_and_flat_agree():
    flat = load_dataset("digits", standardize=False)
    img = load_dataset("digits", standardize=False, flat=False)
    assert img.x_train.shape == (1437, 1, 8, 8) and img.x_test.shape == (360, 1, 8, 8)
    assert img.input_shape == (1, 8, 8)
    assert torch.equal(img.x_train.reshape(-1, 64), flat.x_train)
    assert torch.equal(img.y_train, flat.y_train)
    std = load_dataset("digits", flat=False)
    assert std.x_train.shape == (1437, 1, 8, 8) and torch.isfinite(std.x_train).all()


def test_digits_split_is_a_partition_of_the_sklearn_data():
    from sklearn.datasets import load_digits
    bunch = load_digits()
    ds = load_dataset("digits", standardize=False, n_test=300)
    ref = torch.from_numpy((bunch.data / 16.0).astype(np.float32))
    both = torch.cat([ds.x_train, ds.x_test])
    labels = torch.cat([ds.y_train, ds.y_test])
    assert both.shape == ref.shape
    # same multiset of (image, label) rows
    key = lambda x, y: sorted(map(tuple, torch.cat([x, y[:, None].float()], 1).tolist()))
    assert key(both, labels) == key(ref, torch.from_numpy(bunch.target))


def test_digits_subset():
    ds = load_dataset("digits", n_train=100, n_test=50)
    assert ds.x_train.shape == (100, 64) and ds.x_test.shape == (50, 64)
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [10] * 10
    # the test split depends only on n_test and the seed, not on n_train
    full = load_dataset("digits", n_test=50)
    assert torch.equal(full.y_test, ds.y_test)


@pytest.fixture(scope="module")
def mnist1d_default():
    return load_dataset("mnist1d")


def test_mnist1d_default_shapes(mnist1d_default):
    ds = mnist1d_default
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.num_classes == 10
    assert sorted(torch.unique(ds.y_train).tolist()) == list(range(10))
    assert ds.spec["num_samples"] == 5000 and ds.spec["train_split"] == 0.8


def test_mnist1d_is_the_package_generator_with_our_seed():
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.seed, args.num_samples = 3, 200
    ref = make_dataset(args)
    ds = load_dataset("mnist1d", seed=3, num_samples=200, standardize=False)
    assert ds.x_train.shape == (160, 40) and ds.x_test.shape == (40, 40)
    assert torch.equal(ds.x_train, torch.from_numpy(ref["x"].astype(np.float32)))
    assert torch.equal(ds.y_test, torch.from_numpy(ref["y_test"].astype(np.int64)))


def test_mnist1d_generator_is_deterministic_and_restores_global_rng():
    random.seed(123)
    np.random.seed(123)
    py_before, np_before = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    a = mnist1d_arrays(5, num_samples=100)
    # the caller's global streams continue as if nothing had run
    assert random.random() == py_before and np.random.random() == np_before
    np.random.seed(999)  # global state set to something else: same output
    b = mnist1d_arrays(5, num_samples=100)
    for key in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(a[key], b[key])
    c = mnist1d_arrays(6, num_samples=100)
    assert not np.array_equal(a["x"], c["x"])


def test_mnist1d_channels_and_subsets():
    ds = load_dataset("mnist1d", num_samples=200, flat=False, n_train=50, n_test=20)
    assert ds.x_train.shape == (50, 1, 40) and ds.x_test.shape == (20, 1, 40)
    full = load_dataset("mnist1d", num_samples=200, flat=False)
    assert full.x_train.shape == (160, 1, 40)
    # stratified: each class gets its proportional share of the pool, rounded up or down
    share = torch.bincount(full.y_train, minlength=10).double() * 50 / 160
    got = torch.bincount(ds.y_train, minlength=10).double()
    assert ((got - share).abs() < 1).all()
    # n equal to the pool is the same as None
    same = load_dataset("mnist1d", num_samples=200, flat=False, n_train=160)
    assert torch.equal(same.x_train, full.x_train)
