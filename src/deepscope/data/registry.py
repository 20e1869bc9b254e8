"""Dataset specs: completion with defaults, validation, and ``load_dataset`` dispatch.

A dataset spec is a JSON-serializable dict. :func:`complete_dataset_spec` fills every key
with its default and validates it; :func:`load_dataset` builds the tensors from the completed
spec, so ``load_dataset(ds.spec)`` rebuilds bitwise-identical tensors. The pipeline, the same
for every dataset, is

1. the dataset's builder makes train/test arrays at the requested sizes (seeded splits and
   subsets, see :mod:`deepscope.data.transforms`);
2. classification only: ``random_labels`` replaces every train label by a uniform class, or
   ``label_noise = p`` moves exactly ``round(p * n_train)`` train labels to a different class
   (Zhang et al., ICLR 2017); test labels are never touched;
3. ``standardize``: inputs are z-scored per feature with train-split statistics (regression
   targets are left as they are);
4. inputs become float32 tensors, labels int64 (targets float32, shape (n, k)).

Common keys: ``name``, ``seed`` (0), ``n_train``, ``n_test`` (None: the dataset's default
size, which for file and generator-backed datasets means all available examples),
``label_noise`` (0.0, in [0, 1)), ``random_labels`` (False), ``standardize`` (True for all
but ``polyreg``). A key set to None takes its default.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from deepscope.data._spec import COMMON_DEFAULTS, DatasetDef, check_common
from deepscope.data.builtin import DIGITS, MNIST1D
from deepscope.data.dataset import Dataset
from deepscope.data.files import CIFAR10, MNIST_IDX
from deepscope.data.synthetic import GAUSSIAN_MIXTURE, POLYREG, TEACHER
from deepscope.data.transforms import corrupt_labels, random_labels, rng_for, standardize
from deepscope.errors import ConfigError, unknown_name

__all__ = ["DATASETS", "load_dataset", "complete_dataset_spec", "dataset_summaries"]

_REGISTRY: dict[str, DatasetDef] = {
    d.name: d for d in (DIGITS, MNIST1D, TEACHER, POLYREG, GAUSSIAN_MIXTURE, MNIST_IDX, CIFAR10)
}

#: names accepted by :func:`load_dataset`
DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def dataset_summaries() -> dict[str, str]:
    """One line per dataset name, for help texts."""
    return {name: d.summary for name, d in _REGISTRY.items()}


def _as_spec(name_or_spec: str | Mapping[str, Any], overrides: Mapping[str, Any]
             ) -> dict[str, Any]:
    if isinstance(name_or_spec, str):
        spec: dict[str, Any] = {"name": name_or_spec}
    elif isinstance(name_or_spec, Mapping):
        spec = dict(name_or_spec)
    else:
        raise ConfigError(f"dataset must be a name or a spec dict, got "
                          f"{type(name_or_spec).__name__}")
    spec.update(overrides)
    return spec


def _definition(spec: Mapping[str, Any]) -> DatasetDef:
    name = spec.get("name")
    if name is None:
        raise ConfigError(f"dataset spec needs a 'name': expected one of "
                          f"{', '.join(sorted(DATASETS))}, got keys {sorted(map(str, spec))}")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("dataset", name, DATASETS)
    return _REGISTRY[name]


def complete_dataset_spec(spec: str | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Return the spec with every key present, defaults filled and values validated.

    Raises ConfigError for an unknown dataset name, an unknown key (named in the message) or
    a value of the wrong type or range. The result is a new dict of JSON types only.
    """
    raw = _as_spec(spec, overrides)
    definition = _definition(raw)
    defaults = {**COMMON_DEFAULTS, **copy.deepcopy(definition.defaults)}
    for key in raw:
        if key not in defaults:
            raise unknown_name(f"{definition.name!r} dataset key", key, defaults)
    out = dict(defaults)
    for key, value in raw.items():
        if value is not None:
            out[key] = copy.deepcopy(value)
    out["name"] = definition.name
    check_common(out)
    definition.complete(out)
    task = definition.task(out)
    if task == "regression" and (out["label_noise"] > 0 or out["random_labels"]):
        raise ConfigError(f"dataset {definition.name!r} is a regression task: label_noise and "
                          f"random_labels apply to classification; expected 0.0 and False, "
                          f"got {out['label_noise']} and {out['random_labels']}")
    return out


def load_dataset(name_or_spec: str | Mapping[str, Any], **overrides: Any) -> Dataset:
    """Build a :class:`Dataset` from a name or a spec dict, with ``overrides`` applied on top.

    ``load_dataset("digits", n_train=500, label_noise=0.2)``; the returned ``ds.spec`` is the
    completed spec, and ``load_dataset(ds.spec)`` gives bitwise-identical tensors.
    See the module docstring for the pipeline and :data:`DATASETS` for the names.
    """
    spec = complete_dataset_spec(name_or_spec, **overrides)
    splits = _REGISTRY[spec["name"]].build(spec)
    y_train = splits.y_train
    if splits.task == "classification":
        if spec["random_labels"]:
            y_train = random_labels(y_train.shape[0], splits.num_classes,
                                    rng_for(spec["seed"], "random-labels"))
        elif spec["label_noise"] > 0:
            y_train = corrupt_labels(y_train, spec["label_noise"], splits.num_classes,
                                     rng_for(spec["seed"], "label-noise"))
    x_train, x_test = splits.x_train, splits.x_test
    if spec["standardize"]:
        x_train, x_test, _, _ = standardize(x_train, x_test)
    label_dtype = np.int64 if splits.task == "classification" else np.float32
    return Dataset(x_train=_tensor(x_train, np.float32), y_train=_tensor(y_train, label_dtype),
                   x_test=_tensor(x_test, np.float32),
                   y_test=_tensor(splits.y_test, label_dtype),
                   task=splits.task, num_classes=splits.num_classes, spec=spec)


def _tensor(a: np.ndarray, dtype: type) -> torch.Tensor:
    arr = np.ascontiguousarray(a, dtype=dtype)
    if not arr.flags.writeable:  # a view of a cached array: torch must own its memory
        arr = arr.copy()
    return torch.from_numpy(arr)
