"""Losses and full-pass evaluation (mean loss and accuracy over a whole split).

``cross_entropy`` is :func:`torch.nn.functional.cross_entropy` on integer labels.
``mse`` is the mean over all entries of ``(output - target)**2`` (``F.mse_loss``); integer
class labels are one-hot encoded first (MSE classification, e.g. Hui & Belkin 2021).
Accuracy is ``argmax(output) == label`` for integer labels and NaN for regression targets.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepscope._params import eval_mode
from deepscope.errors import ConfigError, ShapeError, unknown_name
from deepscope.train.config import LOSSES

__all__ = ["evaluate", "loss_function", "default_loss", "check_loss_fits"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _mse(out: Tensor, y: Tensor) -> Tensor:
    if not y.is_floating_point():
        y = F.one_hot(y, out.shape[-1]).to(out.dtype)
    elif y.dim() == 1 and out.dim() == 2 and out.shape[1] == 1:
        y = y.unsqueeze(1)
    if out.shape != y.shape:
        raise ShapeError(f"mse loss: model output has shape {tuple(out.shape)}, "
                         f"targets {tuple(y.shape)}")
    return F.mse_loss(out, y)


def loss_function(name: str) -> LossFn:
    """The batch-mean loss ``fn(output, target) -> scalar`` for ``name``."""
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "mse":
        return _mse
    raise unknown_name("loss", name, LOSSES)


def default_loss(task_or_y: str | Tensor) -> str:
    """``cross_entropy`` for classification (integer labels), ``mse`` for regression."""
    if isinstance(task_or_y, Tensor):
        return "mse" if task_or_y.is_floating_point() else "cross_entropy"
    return "cross_entropy" if task_or_y == "classification" else "mse"


def check_loss_fits(loss: str, y: Tensor) -> None:
    """``cross_entropy`` needs integer class labels; ``mse`` takes either kind."""
    if loss not in LOSSES:
        raise unknown_name("loss", loss, LOSSES)
    if loss == "cross_entropy" and y.is_floating_point():
        raise ConfigError(f"loss 'cross_entropy' needs integer class labels, got {y.dtype} "
                          f"targets of shape {tuple(y.shape)} (use loss='mse' for regression)")


def _check_output(out: Tensor, y: Tensor, loss: str) -> None:
    if loss == "cross_entropy" and (out.dim() != 2 or out.shape[0] != y.shape[0]):
        raise ShapeError(f"cross_entropy: expected model output of shape (batch, classes) = "
                         f"({y.shape[0]}, C), got {tuple(out.shape)}")


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (cpu/float32 if it has none)."""
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.float32)
    return torch.device("cpu"), torch.float32


def evaluate_tensors(model: nn.Module, x: Tensor, y: Tensor, loss: str,
                     batch_size: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` already on the model's device/dtype.

    Runs in eval mode under ``torch.no_grad`` and restores every submodule's mode.
    One host synchronisation at the end.
    """
    n = x.shape[0]
    if n == 0:
        return math.nan, math.nan
    classify = not y.is_floating_point()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    denom = 0  # number of summed loss terms: samples (cross-entropy) or entries (mse)
    with torch.no_grad(), eval_mode(model):
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            if i == 0:
                _check_output(out, yb, loss)
            if loss == "cross_entropy":
                total += F.cross_entropy(out, yb, reduction="sum")
                denom += out.shape[0]
            else:
                total += _mse(out, yb) * out.numel()
                denom += out.numel()
            if classify:
                correct += (out.argmax(dim=-1) == yb).sum()
    mean = float(total) / denom
    acc = float(correct) / n if classify else math.nan
    return mean, acc


def evaluate(model: nn.Module, data, loss: str | None = None, batch_size: int = 1024, *,
             split: str = "test") -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over a whole split.

    Args:
        model: any ``nn.Module``; evaluated in eval mode under ``torch.no_grad`` on its own
            device; its train/eval flags are restored afterwards and nothing else changes.
        data: a :class:`deepscope.data.Dataset` (``split`` picks ``"train"`` or ``"test"``) or
            a pair ``(x, y)`` of tensors.
        loss: ``"cross_entropy"`` or ``"mse"``; ``None`` picks by the task (dataset) or by the
            targets' dtype (pair: float -> mse, integer -> cross_entropy).
        batch_size: evaluation batch size (affects speed only).

    Returns:
        ``{"loss": mean loss, "acc": accuracy}`` (``acc`` is NaN for regression targets).
    """
    from deepscope.data import Dataset
    if isinstance(data, Dataset):
        x, y = data.split(split)
        loss = default_loss(data.task) if loss is None else loss
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ShapeError(f"evaluate: {x.shape[0]} inputs but {y.shape[0]} targets")
        loss = default_loss(y) if loss is None else loss
    else:
        raise ConfigError(f"evaluate: expected a deepscope Dataset or an (x, y) pair of tensors, "
                          f"got {type(data).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_loss_fits(loss, y)
    device, dtype = model_device_dtype(model)
    x = x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
    y = y.to(device=device, dtype=dtype if y.is_floating_point() else y.dtype)
    mean, acc = evaluate_tensors(model, x, y, loss, batch_size)
    return {"loss": mean, "acc": acc}
