"""teacher-student, polyreg and gaussian-mixture: shapes and the formulas they document."""
import math

import numpy as np
import pytest
import torch

from deepscope.data import load_dataset
from deepscope.data.synthetic import polyreg_coefficients, teacher_weights


def _teacher_reference(x: np.ndarray, w1, w2, b2) -> np.ndarray:
    """Slow, obvious teacher: sum_j W2[c, j] * max(0, sum_i W1[j, i] x_i) + b2[c]."""
    out = np.zeros((x.shape[0], w2.shape[0]))
    for n in range(x.shape[0]):
        hidden = [max(0.0, float(np.dot(w1[j], x[n]))) for j in range(w1.shape[0])]
        for c in range(w2.shape[0]):
            out[n, c] = sum(w2[c, j] * hidden[j] for j in range(w1.shape[0])) + b2[c]
    return out


def test_teacher_classification_matches_reference():
    ds = load_dataset("teacher", n_train=100, n_test=40, num_classes=3, standardize=False)
    assert ds.x_train.shape == (100, 20) and ds.x_test.shape == (40, 20)
    assert ds.num_classes == 3 and ds.task == "classification"
    w1, w2, b2 = teacher_weights(0, 20, 10, 3)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        ref = _teacher_reference(x.double().numpy(), w1, w2, b2)
        assert np.array_equal(np.argmax(ref, axis=1), y.numpy())


def test_teacher_default_classes_are_not_degenerate():
    ds = load_dataset("teacher")
    assert ds.x_train.shape == (1000, 20) and ds.x_test.shape == (1000, 20)
    assert ds.num_classes == 2
    frac = float(ds.y_train.double().mean())
    assert 0.2 < frac < 0.8


def test_teacher_regression_matches_reference():
    ds = load_dataset("teacher", task="regression", n_train=60, n_test=30, input_dim=5,
                      teacher_width=7, standardize=False)
    assert ds.y_train.shape == (60, 1) and ds.y_train.dtype == torch.float32
    assert ds.num_classes is None and ds.num_outputs == 1
    w1, w2, b2 = teacher_weights(0, 5, 7, 1)
    ref = _teacher_reference(ds.x_train.double().numpy(), w1, w2, b2)
    np.testing.assert_allclose(ds.y_train.numpy(), ref, rtol=1e-5, atol=1e-5)
    noisy = load_dataset(ds.spec, noise=0.5)
    resid = (noisy.y_train - ds.y_train).double()
    assert torch.equal(noisy.x_train, ds.x_train)
    assert 0.3 < float(resid.std()) < 0.7


def test_teacher_test_split_does_not_depend_on_n_train():
    a = load_dataset("teacher", n_train=10, n_test=30)
    b = load_dataset("teacher", n_train=50, n_test=30, standardize=False)
    c = load_dataset("teacher", n_train=10, n_test=30, standardize=False)
    assert torch.equal(b.x_test, c.x_test) and torch.equal(b.y_test, c.y_test)
    assert torch.equal(a.y_test, c.y_test)


@pytest.mark.parametrize("degree, expected", [(2, 2), ("quadratic", 2), (3, 3), ("cubic", 3)])
def test_polyreg_degree_names(degree, expected):
    ds = load_dataset("polyreg", degree=degree, n_train=20, n_test=10)
    assert ds.spec["degree"] == expected
    coef = polyreg_coefficients(0, expected)
    assert len(coef) == expected + 1 and 1.0 <= abs(coef[-1]) <= 2.0
    assert all(-1.0 <= a <= 1.0 for a in coef[:-1])


def test_polyreg_formula_with_given_coefficients():
    coef = [0.5, -1.0, 2.0, 3.0]
    ds = load_dataset("polyreg", degree="cubic", coefficients=coef, n_train=200, n_test=50)
    assert ds.x_train.shape == (200, 1) and ds.y_train.shape == (200, 1)
    assert ds.task == "regression" and ds.spec["standardize"] is False
    x = ds.x_train.double()
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    y = 0.5 - 1.0 * x + 2.0 * x**2 + 3.0 * x**3
    assert torch.allclose(ds.y_train.double(), y, rtol=1e-5, atol=1e-5)


def test_polyreg_seeded_coefficients_range_and_noise():
    ds = load_dataset("polyreg", n_train=300, n_test=10, x_range=[0.0, 2.0])
    a = polyreg_coefficients(0, 2)
    x = ds.x_train.double()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 2.0 and float(x.min()) < 0.1
    assert torch.allclose(ds.y_train.double(), a[0] + a[1] * x + a[2] * x**2, atol=1e-5)
    assert polyreg_coefficients(1, 2) != a
    noisy = load_dataset(ds.spec, noise=0.1)
    assert 0.07 < float((noisy.y_train - ds.y_train).std()) < 0.13


def test_gaussian_mixture_means_and_balance():
    ds = load_dataset("gaussian-mixture", n_train=3000, n_test=300, num_classes=3, dim=4,
                      separation=5.0, std=0.5, standardize=False)
    assert ds.x_train.shape == (3000, 4) and ds.x_test.shape == (300, 4)
    assert torch.bincount(ds.y_train).tolist() == [1000] * 3
    for c in range(3):
        xc = ds.x_train[ds.y_train == c].double()
        mean = xc.mean(0)
        assert abs(float(mean.norm()) - 5.0) < 0.1  # means lie on the sphere of radius 5
        assert abs(float(xc.std(0).mean()) - 0.5) < 0.05
    zero = load_dataset(ds.spec, separation=0.0)
    assert float(zero.x_train.double().mean(0).norm()) < 0.05
    assert math.isclose(float(zero.x_train.std()), 0.5, rel_tol=0.05)
