"""Synthetic tasks whose ground truth is known: teacher-student, polynomial regression, mixtures.

Every random quantity comes from its own seeded stream (:func:`~deepscope.data.transforms.rng_for`),
so the teacher/function is fixed by ``seed`` alone, and the train inputs, test inputs and
noises do not change when another size changes. All arithmetic is float64; inputs and
regression targets are stored as float32.

``teacher`` (teacher-student setup, as in Gardner & Derrida 1989 and the two-layer analysis of
Goldt et al., "Dynamics of stochastic gradient descent for two-layer neural networks in the
teacher-student setup", NeurIPS 2019)
    Inputs ``x ~ N(0, I_d)`` with ``d = input_dim``. The teacher is a random two-layer ReLU
    network ``f(x) = W2 relu(W1 x) + b2`` with ``W1`` of shape ``(teacher_width, d)``,
    entries ``N(0, 1/d)``, ``W2`` of shape ``(k, teacher_width)``, entries
    ``N(0, 1/teacher_width)``, and ``b2 = -W2 m`` where ``m_j = ||W1_j|| / sqrt(2 pi)`` is
    the mean of ``relu(W1_j x)``; this centres every output so classes are not degenerate.
    ``task="classification"``: ``k = num_classes`` (default 2), label
    ``argmax_c f_c(x) + noise * eps_c``; ``task="regression"``: ``k = 1``, target
    ``f(x) + noise * eps`` of shape ``(n, 1)``, with ``eps ~ N(0, 1)`` in both cases.

``polyreg`` (the one-dimensional quadratic / cubic regression tasks used by Freeman & Bruna,
"Topology and geometry of half-rectified network optimization", ICLR 2017)
    ``x ~ U[lo, hi]`` with ``[lo, hi] = x_range`` (default [-1, 1]) and
    ``y = sum_{j=0}^{p} a_j x^j + noise * eps``, ``eps ~ N(0, 1)``, ``p = degree``
    (2 or "quadratic", 3 or "cubic"; any p >= 1 is accepted). ``coefficients = [a_0..a_p]``
    may be given; when None they are drawn from ``seed`` by :func:`polyreg_coefficients`:
    ``a_j ~ U(-1, 1)`` for ``j < p`` and ``a_p = s * U(1, 2)`` with a fair random sign
    ``s``, so the polynomial has exactly the stated degree. Shapes: x (n, 1), y (n, 1).
    Inputs are not standardized by default (``standardize=False``) so that ``x`` keeps the
    range the formula is written in.

``gaussian-mixture``
    ``num_classes`` isotropic Gaussians in ``dim`` dimensions. Class means
    ``mu_c = separation * g_c / ||g_c||`` with ``g_c ~ N(0, I)`` (points on the sphere of
    radius ``separation``); ``x = mu_y + std * eps``. Labels are balanced: ``i mod C``
    for ``i < n``, randomly permuted.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from deepscope.data._spec import (DatasetDef, Splits, check_choice, check_float, check_int)
from deepscope.data.transforms import rng_for
from deepscope.errors import ConfigError

__all__ = ["TEACHER", "POLYREG", "GAUSSIAN_MIXTURE", "polyreg_coefficients",
           "teacher_weights"]

_SIZES = {"n_train": 1000, "n_test": 1000}
_DEGREE_NAMES = {"quadratic": 2, "cubic": 3}
_MAX_DEGREE = 12


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


# ---------------------------------------------------------------------------- teacher

def teacher_weights(seed: int, input_dim: int, teacher_width: int, num_outputs: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's ``(W1, W2, b2)`` for a seed, as described in the module docstring."""
    rng = rng_for(seed, "teacher/weights")
    w1 = rng.standard_normal((teacher_width, input_dim)) / math.sqrt(input_dim)
    w2 = rng.standard_normal((num_outputs, teacher_width)) / math.sqrt(teacher_width)
    relu_mean = np.linalg.norm(w1, axis=1) / math.sqrt(2.0 * math.pi)
    return w1, w2, -(w2 @ relu_mean)


def _complete_teacher(spec: dict[str, Any]) -> None:
    task = check_choice(spec, "task", ("classification", "regression"))
    check_int(spec, "input_dim", minimum=1)
    check_int(spec, "teacher_width", minimum=1)
    check_float(spec, "noise", low=0.0)
    if task == "classification":
        if spec["num_classes"] is None:
            spec["num_classes"] = 2
        check_int(spec, "num_classes", minimum=2)
    elif spec["num_classes"] is not None:
        raise ConfigError(f"dataset 'teacher': num_classes applies to task='classification'; "
                          f"expected None for task='regression', got {spec['num_classes']!r}")


def _build_teacher(spec: dict[str, Any]) -> Splits:
    seed, d = spec["seed"], spec["input_dim"]
    classify = spec["task"] == "classification"
    k = spec["num_classes"] if classify else 1
    w1, w2, b2 = teacher_weights(seed, d, spec["teacher_width"], k)
    out = {}
    for split in ("train", "test"):
        n = spec[f"n_{split}"]
        x = rng_for(seed, f"teacher/x-{split}").standard_normal((n, d))
        f = np.maximum(x @ w1.T, 0.0) @ w2.T + b2
        if spec["noise"] > 0:
            f = f + spec["noise"] * rng_for(seed, f"teacher/noise-{split}").standard_normal(f.shape)
        out[f"x_{split}"] = _f32(x)
        out[f"y_{split}"] = np.argmax(f, axis=1).astype(np.int64) if classify else _f32(f)
    return Splits(**out, task=spec["task"], num_classes=k if classify else None)


TEACHER = DatasetDef(
    name="teacher",
    summary="teacher-student: Gaussian inputs labelled by a random 2-layer ReLU net",
    defaults={**_SIZES, "task": "classification", "input_dim": 20, "teacher_width": 10,
              "num_classes": None, "noise": 0.0},
    complete=_complete_teacher,
    task=lambda spec: spec["task"],
    build=_build_teacher,
)


# ---------------------------------------------------------------------------- polyreg

def polyreg_coefficients(seed: int, degree: int) -> list[float]:
    """The seeded coefficients ``[a_0, ..., a_degree]`` of the ``polyreg`` task."""
    rng = rng_for(seed, "polyreg/coefficients")
    lower = rng.uniform(-1.0, 1.0, size=degree)
    sign = 1.0 if rng.integers(0, 2) else -1.0
    lead = sign * rng.uniform(1.0, 2.0)
    return [float(a) for a in lower] + [float(lead)]


def _complete_polyreg(spec: dict[str, Any]) -> None:
    degree = spec["degree"]
    if isinstance(degree, str):
        if degree not in _DEGREE_NAMES:
            raise ConfigError(f"dataset 'polyreg': degree must be an integer >= 1 or one of "
                              f"{', '.join(_DEGREE_NAMES)}, got {degree!r}")
        spec["degree"] = _DEGREE_NAMES[degree]
    degree = check_int(spec, "degree", minimum=1, maximum=_MAX_DEGREE)
    check_float(spec, "noise", low=0.0)
    spec["x_range"] = _pair(spec["x_range"])
    coef = spec["coefficients"]
    if coef is not None:
        if isinstance(coef, (str, bytes)) or not hasattr(coef, "__len__") \
                or len(coef) != degree + 1 \
                or not all(isinstance(c, numbers.Real) and not isinstance(c, bool)
                           and math.isfinite(float(c)) for c in coef):
            raise ConfigError(f"dataset 'polyreg': coefficients must be None or a list of "
                              f"degree + 1 = {degree + 1} finite numbers [a_0, ..., a_p], "
                              f"got {coef!r}")
        spec["coefficients"] = [float(c) for c in coef]


def _pair(value: Any) -> list[float]:
    ok = (not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                  and math.isfinite(float(v)) for v in value))
    if not ok or float(value[0]) >= float(value[1]):
        raise ConfigError(f"dataset 'polyreg': x_range must be [lo, hi] with finite lo < hi, "
                          f"got {value!r}")
    return [float(value[0]), float(value[1])]


def _build_polyreg(spec: dict[str, Any]) -> Splits:
    seed = spec["seed"]
    coef = spec["coefficients"]
    if coef is None:
        coef = polyreg_coefficients(seed, spec["degree"])
    lo, hi = spec["x_range"]
    out = {}
    for split in ("train", "test"):
        n = spec[f"n_{split}"]
        x = rng_for(seed, f"polyreg/x-{split}").uniform(lo, hi, size=(n, 1))
        y = np.polynomial.polynomial.polyval(x, np.asarray(coef, dtype=np.float64))
        if spec["noise"] > 0:
            y = y + spec["noise"] * rng_for(seed, f"polyreg/noise-{split}").standard_normal(y.shape)
        out[f"x_{split}"], out[f"y_{split}"] = _f32(x), _f32(y)
    return Splits(**out, task="regression", num_classes=None)


POLYREG = DatasetDef(
    name="polyreg",
    summary="1-D quadratic/cubic regression (Freeman & Bruna 2017)",
    defaults={**_SIZES, "standardize": False, "degree": 2, "x_range": [-1.0, 1.0],
              "noise": 0.0, "coefficients": None},
    complete=_complete_polyreg,
    task=lambda spec: "regression",
    build=_build_polyreg,
)


# ---------------------------------------------------------------------------- mixture

def _complete_mixture(spec: dict[str, Any]) -> None:
    check_int(spec, "num_classes", minimum=2)
    check_int(spec, "dim", minimum=1)
    check_float(spec, "separation", low=0.0)
    check_float(spec, "std", low=0.0, low_open=True)


def _build_mixture(spec: dict[str, Any]) -> Splits:
    seed, c, dim = spec["seed"], spec["num_classes"], spec["dim"]
    g = rng_for(seed, "gaussian-mixture/means").standard_normal((c, dim))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    means = spec["separation"] * g / np.where(norms > 0, norms, 1.0)
    out = {}
    for split in ("train", "test"):
        n = spec[f"n_{split}"]
        y = rng_for(seed, f"gaussian-mixture/y-{split}").permutation(np.arange(n) % c)
        eps = rng_for(seed, f"gaussian-mixture/x-{split}").standard_normal((n, dim))
        out[f"x_{split}"] = _f32(means[y] + spec["std"] * eps)
        out[f"y_{split}"] = y.astype(np.int64)
    return Splits(**out, task="classification", num_classes=c)


GAUSSIAN_MIXTURE = DatasetDef(
    name="gaussian-mixture",
    summary="isotropic Gaussian classes with seeded means on a sphere",
    defaults={**_SIZES, "num_classes": 3, "dim": 2, "separation": 3.0, "std": 1.0},
    complete=_complete_mixture,
    task=lambda spec: "classification",
    build=_build_mixture,
)
