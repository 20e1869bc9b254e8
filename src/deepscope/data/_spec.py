"""Dataset definitions and the value checks used to complete dataset specs.

A dataset is described to the registry by a :class:`DatasetDef`: its name-specific keys with
their defaults, a ``complete`` hook that validates and normalizes those keys in place, the
task it poses, and a ``build`` function that turns a completed spec into numpy arrays
(:class:`Splits`). Label noise, standardization and the conversion to torch tensors are done
once, by the registry, for every dataset.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepscope.errors import ConfigError

__all__ = ["COMMON_DEFAULTS", "DatasetDef", "Splits", "check_int", "check_float",
           "check_bool", "check_choice", "check_size", "check_common"]

#: keys every dataset spec has, in the order the completed spec lists them.
COMMON_DEFAULTS: dict[str, Any] = {
    "name": None,
    "seed": 0,
    "n_train": None,
    "n_test": None,
    "label_noise": 0.0,
    "random_labels": False,
    "standardize": True,
}

_MAX_SEED = 2**32 - 1


@dataclass
class Splits:
    """Train/test arrays as a builder returns them, before label noise and standardization.

    ``x_*`` are float32 arrays; ``y_*`` are int64 labels (classification) or float32 targets
    of shape ``(n, k)`` (regression).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int | None


@dataclass(frozen=True)
class DatasetDef:
    """How the registry completes, checks and builds one named dataset.

    ``defaults`` holds the name-specific keys and may also override common defaults (for
    example the default ``n_train`` of a synthetic task). ``complete(spec)`` validates and
    normalizes the name-specific keys of a spec that already has every key. ``task(spec)``
    says whether the completed spec is a classification or a regression problem.
    """

    name: str
    summary: str
    defaults: dict[str, Any]
    complete: Callable[[dict[str, Any]], None]
    task: Callable[[dict[str, Any]], str]
    build: Callable[[dict[str, Any]], Splits]


def _where(spec: dict[str, Any], key: str) -> str:
    return f"dataset {spec.get('name')!r}: {key}"


def check_int(spec: dict[str, Any], key: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``spec[key]`` as a Python int, raising ConfigError if it is not one in range."""
    value = spec[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{_where(spec, key)} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{_where(spec, key)} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{_where(spec, key)} must be <= {maximum}, got {value}")
    spec[key] = value
    return value


def check_size(spec: dict[str, Any], key: str) -> int | None:
    """``n_train``/``n_test``: None (all available / the default size) or an int >= 1."""
    if spec[key] is None:
        return None
    return check_int(spec, key, minimum=1)


def check_float(spec: dict[str, Any], key: str, *, low: float | None = None,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> float:
    """Return ``spec[key]`` as a finite float in the given interval, else raise ConfigError."""
    value = spec[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)):
        raise ConfigError(f"{_where(spec, key)} must be a finite number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ConfigError(f"{_where(spec, key)} must lie in {interval}, got {value}")
    spec[key] = value
    return value


def check_bool(spec: dict[str, Any], key: str) -> bool:
    """Return ``spec[key]`` as a bool; anything but True/False raises ConfigError."""
    value = spec[key]
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{_where(spec, key)} must be true or false, got {value!r}")
    spec[key] = bool(value)
    return bool(value)


def check_choice(spec: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    """Return ``spec[key]`` if it is one of ``choices``, else raise ConfigError."""
    value = spec[key]
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{_where(spec, key)} must be one of {', '.join(choices)}, "
                          f"got {value!r}")
    return value


def check_common(spec: dict[str, Any]) -> None:
    """Validate the keys shared by every dataset (in place)."""
    check_int(spec, "seed", minimum=0, maximum=_MAX_SEED)
    check_size(spec, "n_train")
    check_size(spec, "n_test")
    check_float(spec, "label_noise", low=0.0, high=1.0, high_open=True)
    check_bool(spec, "random_labels")
    check_bool(spec, "standardize")
    if spec["random_labels"] and spec["label_noise"] > 0:
        raise ConfigError(f"dataset {spec['name']!r}: random_labels=True replaces every "
                          f"train label, so label_noise must be 0, got {spec['label_noise']}")
