"""The in-memory Dataset every deepscope probe and trainer consumes."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from deepscope.errors import ConfigError, ShapeError

__all__ = ["Dataset", "batches"]


def batches(x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, drop_last: bool = False
            ) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x[idx], y[idx])`` mini-batches; a seeded ``generator`` fixes the shuffle order.

    Indexing in-memory tensors directly is several times cheaper than a torch DataLoader for
    the small datasets deepscope trains on.
    """
    n = x.shape[0]
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - (n % batch_size) if drop_last else n
    for i in range(0, stop, batch_size):
        if order is None:
            yield x[i:i + batch_size], y[i:i + batch_size]
        else:
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]


@dataclass
class Dataset:
    """Train/test tensors plus the spec that rebuilds them.

    ``x_*`` are float32; ``y_*`` are int64 class labels (classification) or float32 targets of
    shape ``(n, k)`` (regression). ``spec`` is the completed, JSON-serializable dataset spec.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str
    num_classes: int | None
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ConfigError(f"task must be 'classification' or 'regression', got {self.task!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ShapeError(f"{split}: {x.shape[0]} inputs but {y.shape[0]} targets")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ShapeError(f"train inputs have shape {tuple(self.x_train.shape[1:])}, "
                             f"test inputs {tuple(self.x_test.shape[1:])}")

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "custom"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        if self.task == "classification":
            return int(self.num_classes)
        return int(self.y_train.shape[1]) if self.y_train.dim() > 1 else 1

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        if which not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def loader(self, split: str = "train", batch_size: int = 128, *, shuffle: bool = False,
               seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Mini-batches of a split; with ``shuffle`` the order is drawn from ``seed``."""
        x, y = self.split(split)
        g = None
        if shuffle:
            g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        return batches(x, y, batch_size, shuffle=shuffle, generator=g)

    def torch_loader(self, split: str = "train", batch_size: int = 128, *,
                     shuffle: bool = False, seed: int | None = None):
        """A ``torch.utils.data.DataLoader`` over a split, for code that wants one."""
        from torch.utils.data import DataLoader, TensorDataset
        x, y = self.split(split)
        g = torch.Generator().manual_seed(0 if seed is None else int(seed)) if shuffle else None
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                          generator=g)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, task={self.task}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes})")
