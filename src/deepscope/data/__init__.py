"""Offline, seeded datasets with train/test splits (``load_dataset``) and local-file loaders.

Built-in names (:data:`DATASETS`): ``digits``, ``mnist1d``, ``teacher``, ``polyreg``,
``gaussian-mixture``, and the file-backed ``mnist-idx`` and ``cifar10`` (key ``path``).
"""
from deepscope.data.dataset import Dataset, batches
from deepscope.data.files import load_cifar10, load_mnist_idx, read_cifar_batch, read_idx
from deepscope.data.registry import (DATASETS, complete_dataset_spec, dataset_summaries,
                                     load_dataset)

__all__ = [
    # verbs
    "load_dataset", "complete_dataset_spec", "load_mnist_idx", "load_cifar10", "read_idx",
    "read_cifar_batch", "batches", "dataset_summaries",
    # names and types
    "DATASETS", "Dataset",
]
