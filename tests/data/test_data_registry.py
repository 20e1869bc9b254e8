"""Spec completion, validation, determinism, round trips and the shared pipeline."""
import json

import numpy as np
import pytest
import torch

from deepscope.data import DATASETS, Dataset, complete_dataset_spec, load_dataset
from deepscope.errors import ConfigError

# cheap specs of every built-in dataset (mnist1d with a small generator run)
CHEAP = {
    "digits": {"name": "digits"},
    "mnist1d": {"name": "mnist1d", "num_samples": 200},
    "teacher": {"name": "teacher", "n_train": 200, "n_test": 100},
    "teacher-regression": {"name": "teacher", "task": "regression", "n_train": 200,
                           "n_test": 100, "noise": 0.1},
    "polyreg": {"name": "polyreg", "n_train": 200, "n_test": 100, "noise": 0.05},
    "gaussian-mixture": {"name": "gaussian-mixture", "n_train": 200, "n_test": 100},
}


def _tensors(ds: Dataset):
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def _bitwise_equal(a: Dataset, b: Dataset) -> bool:
    return all(u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v)
               for u, v in zip(_tensors(a), _tensors(b)))


def test_names():
    assert set(DATASETS) == {"digits", "mnist1d", "teacher", "polyreg", "gaussian-mixture",
                             "mnist-idx", "cifar10"}


@pytest.mark.parametrize("key", sorted(CHEAP))
def test_same_seed_bitwise_equal_and_spec_round_trip(key):
    a = load_dataset(CHEAP[key])
    b = load_dataset(CHEAP[key])
    assert _bitwise_equal(a, b)
    spec = json.loads(json.dumps(a.spec))  # the completed spec is plain JSON
    assert spec == a.spec
    c = load_dataset(spec)
    assert c.spec == a.spec
    assert _bitwise_equal(a, c)
    assert complete_dataset_spec(a.spec) == a.spec  # completion is idempotent


@pytest.mark.parametrize("key", sorted(CHEAP))
def test_different_seed_differs(key):
    a = load_dataset(CHEAP[key])
    b = load_dataset(CHEAP[key], seed=1)
    assert b.spec["seed"] == 1
    assert not torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("key", sorted(CHEAP))
def test_dtypes_and_tasks(key):
    ds = load_dataset(CHEAP[key])
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    if ds.task == "classification":
        assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
        assert 0 <= int(ds.y_train.min()) and int(ds.y_train.max()) < ds.num_classes
        assert ds.num_outputs == ds.num_classes
    else:
        assert ds.num_classes is None
        assert ds.y_train.dtype == torch.float32 and ds.y_train.dim() == 2
        assert ds.num_outputs == ds.y_train.shape[1]
    for t in _tensors(ds):
        assert t.is_contiguous()
        if t.is_floating_point():
            assert torch.isfinite(t).all()


def test_completed_spec_has_all_defaults():
    spec = complete_dataset_spec("digits")
    assert spec == {"name": "digits", "seed": 0, "n_train": None, "n_test": 360,
                    "label_noise": 0.0, "random_labels": False, "standardize": True,
                    "flat": True}
    assert list(spec)[:7] == ["name", "seed", "n_train", "n_test", "label_noise",
                              "random_labels", "standardize"]
    # None takes the default; numpy scalars become plain JSON numbers
    spec = complete_dataset_spec({"name": "teacher", "n_train": None, "seed": np.int64(3),
                                  "noise": np.float32(0.5)})
    assert spec["n_train"] == 1000 and spec["seed"] == 3 and type(spec["seed"]) is int
    assert type(spec["noise"]) is float
    json.dumps(spec)


def test_overrides_update_name_or_spec_and_input_is_not_mutated():
    spec = {"name": "teacher", "n_train": 50, "n_test": 20}
    ds = load_dataset(spec, n_train=30, seed=4)
    assert spec == {"name": "teacher", "n_train": 50, "n_test": 20}
    assert ds.spec["n_train"] == 30 and ds.spec["seed"] == 4
    assert ds.x_train.shape == (30, 20)
    ds.spec["seed"] = 99  # the returned spec is the dataset's own copy
    assert load_dataset(spec).spec["seed"] == 0


def test_unknown_name():
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnsit'.*expected one of.*digits"):
        load_dataset("mnsit")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        load_dataset({"seed": 1})
    with pytest.raises(ConfigError, match="name or a spec dict"):
        load_dataset(42)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"'digitz_flat'.*expected one of"):
        load_dataset({"name": "digits", "digitz_flat": True})
    with pytest.raises(ConfigError, match="'input_dim'"):
        load_dataset("digits", input_dim=3)  # a key of another dataset


@pytest.mark.parametrize("name, overrides, fragment", [
    ("digits", {"label_noise": 1.5}, r"label_noise must lie in \[0.0, 1.0\), got 1.5"),
    ("digits", {"label_noise": -0.1}, "label_noise"),
    ("digits", {"label_noise": float("nan")}, "finite"),
    ("digits", {"n_train": 0}, "n_train must be >= 1, got 0"),
    ("teacher", {"n_test": 0}, "n_test must be >= 1"),
    ("digits", {"n_train": 2.5}, "n_train must be an integer"),
    ("digits", {"n_train": 5000}, r"n_train must be <= 1437"),
    ("digits", {"n_test": 1797}, "n_test"),
    ("digits", {"seed": -1}, "seed must be >= 0"),
    ("digits", {"seed": True}, "seed must be an integer"),
    ("digits", {"standardize": "yes"}, "standardize must be true or false"),
    ("digits", {"random_labels": 1}, "random_labels must be true or false"),
    ("digits", {"flat": None, "random_labels": True, "label_noise": 0.1}, "label_noise must be 0"),
    ("polyreg", {"label_noise": 0.1}, "regression task"),
    ("teacher", {"task": "regression", "random_labels": True}, "regression task"),
    ("teacher", {"task": "ranking"}, "task must be one of classification, regression"),
    ("teacher", {"num_classes": 1}, "num_classes must be >= 2"),
    ("teacher", {"task": "regression", "num_classes": 3}, "num_classes applies"),
    ("teacher", {"input_dim": 0}, "input_dim"),
    ("teacher", {"noise": -1.0}, "noise"),
    ("polyreg", {"degree": "quartic"}, "degree"),
    ("polyreg", {"degree": 0}, "degree must be >= 1"),
    ("polyreg", {"x_range": [1.0, -1.0]}, "x_range"),
    ("polyreg", {"x_range": "0,1"}, "x_range"),
    ("polyreg", {"coefficients": [1.0, 2.0]}, "degree \\+ 1 = 3"),
    ("gaussian-mixture", {"std": 0.0}, "std"),
    ("gaussian-mixture", {"num_classes": 1}, "num_classes"),
    ("mnist1d", {"num_samples": 105}, "multiple of 10"),
    ("mnist1d", {"train_split": 1.0}, "train_split"),
    ("mnist1d", {"n_train": 4001}, "n_train must be <= 4000"),
    ("mnist-idx", {}, "'path'"),
    ("cifar10", {"path": 3}, "path must be a string"),
])
def test_bad_values_raise_config_error(name, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_dataset(name, **overrides)


def test_standardization_zero_mean_unit_std_and_constant_features():
    ds = load_dataset("digits")
    raw = load_dataset("digits", standardize=False)
    x = ds.x_train.double()
    std_raw = raw.x_train.double().std(0, unbiased=False)
    constant = std_raw == 0
    assert constant.any(), "digits has constant (always blank) pixels"
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_test).all()
    assert torch.allclose(x.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    std = x.std(0, unbiased=False)
    assert torch.allclose(std[~constant], torch.ones(int((~constant).sum()), dtype=torch.float64),
                          atol=1e-4)
    assert (ds.x_train[:, constant] == 0).all()
    # the test split uses the train statistics, not its own
    mean = raw.x_train.double().mean(0)
    scale = torch.where(constant, torch.ones_like(std_raw), std_raw)
    expect = (raw.x_test.double() - mean) / scale
    assert torch.allclose(ds.x_test.double(), expect, atol=1e-5)
    # unstandardized digits are pixel intensities in [0, 1]
    assert float(raw.x_train.min()) == 0.0 and float(raw.x_train.max()) == 1.0


def test_regression_targets_are_not_standardized():
    spec = {"name": "teacher", "task": "regression", "n_train": 100, "n_test": 50}
    a = load_dataset(spec, standardize=True)
    b = load_dataset(spec, standardize=False)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("spec", [{"name": "digits"},
                                  {"name": "gaussian-mixture", "n_train": 301, "n_test": 50}])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.95])
def test_label_noise_changes_exactly_round_fraction(spec, fraction):
    clean = load_dataset(spec)
    noisy = load_dataset(spec, label_noise=fraction)
    n = clean.y_train.shape[0]
    changed = int((noisy.y_train != clean.y_train).sum())
    assert changed == round(fraction * n)
    assert torch.equal(noisy.x_train, clean.x_train)  # the split is the same
    assert torch.equal(noisy.x_test, clean.x_test) and torch.equal(noisy.y_test, clean.y_test)
    assert int(noisy.y_train.min()) >= 0 and int(noisy.y_train.max()) < clean.num_classes
    again = load_dataset(noisy.spec)
    assert torch.equal(again.y_train, noisy.y_train)
    other = load_dataset(noisy.spec, seed=7)
    assert not torch.equal(other.y_train, load_dataset(spec, seed=7, label_noise=0.0).y_train)


def test_random_labels():
    clean = load_dataset("digits")
    rand = load_dataset("digits", random_labels=True)
    assert torch.equal(rand.x_train, clean.x_train)
    assert torch.equal(rand.y_test, clean.y_test) and torch.equal(rand.x_test, clean.x_test)
    agree = float((rand.y_train == clean.y_train).double().mean())
    assert 0.03 < agree < 0.2  # chance level is 1/10
    counts = torch.bincount(rand.y_train, minlength=10)
    assert (counts > 0).all() and rand.y_train.max() < 10
    assert torch.equal(load_dataset(rand.spec).y_train, rand.y_train)
