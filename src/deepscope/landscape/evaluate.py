"""Loss and accuracy of a model at arbitrary points of its parameter space.

Every landscape probe (interpolation, connection paths, slices) asks the same question many
times: what are the loss and accuracy at θ? :class:`PointEvaluator` answers it on a private
deep copy of the user's model, so the model itself is never touched:

- ``vector(model_or_params)`` flattens a model's (or a parameter dict's) parameters in the
  evaluator's layout; ``evaluate(theta)`` loads θ into the copy and evaluates it.
- BatchNorm: with ``bn="recompute"`` (default) the running statistics are re-estimated at
  every point from the training inputs (cumulative average over ``bn_samples`` samples,
  weighted by batch size, only the BatchNorm modules in training mode), as Frankle et al.
  2020 and Jordan et al. 2023 ("REPAIR") do: interpolated parameters with the end points'
  statistics give wrong curves.
  ``bn="keep"`` uses the buffers given to ``evaluate`` (or the model's own).
- Splits: a deepscope Dataset gives ``train`` and ``test``; an ``(x, y)`` pair is ``train``;
  a dict ``{"train": (x, y), "test": (x, y)}`` names its own splits.

Losses are batch means (``cross_entropy`` / ``mse`` as in :mod:`deepscope.train.evaluate`),
accumulated as exact sums over the split; accuracy is NaN for regression targets.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from deepscope._params import flatten, unflatten
from deepscope.errors import ConfigError, ShapeError, unknown_name
from deepscope.train.evaluate import (check_loss_fits, default_loss, evaluate_tensors,
                                      model_device_dtype)

__all__ = ["PointEvaluator", "split_data", "has_batchnorm", "BN_MODES"]

BN_MODES = ("recompute", "keep")


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def split_data(data) -> tuple[dict[str, tuple[Tensor, Tensor]], str | None]:
    """Dataset / (x, y) / {split: (x, y)} -> ({split: (x, y)}, task or None)."""
    from deepscope.data import Dataset
    if isinstance(data, Dataset):
        return {"train": data.split("train"), "test": data.split("test")}, data.task
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data):
        return {"train": (data[0], data[1])}, None
    if isinstance(data, Mapping):
        out = {}
        for k, v in data.items():
            if not (isinstance(v, (tuple, list)) and len(v) == 2
                    and all(isinstance(t, Tensor) for t in v)):
                raise ConfigError(f"data[{k!r}] must be an (x, y) pair of tensors, "
                                  f"got {type(v).__name__}")
            out[str(k)] = (v[0], v[1])
        if "train" not in out:
            raise ConfigError(f"data dict needs a 'train' split, got {sorted(out)}")
        return out, None
    raise ConfigError(f"expected a deepscope Dataset, an (x, y) pair of tensors or a dict of "
                      f"splits, got {type(data).__name__}")


class PointEvaluator:
    """Evaluate loss/accuracy at parameter vectors θ of ``model``'s architecture.

    Args:
        model: the template; deep-copied, never modified.
        data: Dataset, ``(x, y)`` or ``{split: (x, y)}``.
        loss: ``"cross_entropy"``, ``"mse"`` or None (by task / target dtype).
        bn: ``"recompute"`` or ``"keep"`` (see module docstring); ignored without BatchNorm.
        bn_samples: training samples used to re-estimate BatchNorm statistics (None: all).
        bn_inputs: the inputs to re-estimate BatchNorm statistics from (overrides the
            training inputs and ``bn_samples``; e.g. the driver's set, sent to a worker).
        batch_size: evaluation batch size (speed only).
        max_samples: evaluate each split on at most this many samples (a seeded subset).
        seed: seeds the subsets.
        frozen: names of parameters held fixed when beads / bends are trained
            (:func:`deepscope.landscape.dss.fit` zeroes their gradients); None: those of
            ``model`` with ``requires_grad=False``. ``trainable_mask`` is the flat 0/1
            vector (None when nothing is frozen).
    """

    def __init__(self, model: nn.Module, data, *, loss: str | None = None,
                 bn: str = "recompute", bn_samples: int | None = None,
                 batch_size: int = 1024, max_samples: int | None = None, seed: int = 0,
                 bn_inputs: Tensor | None = None, frozen=None):
        if bn not in BN_MODES:
            raise unknown_name("bn", bn, BN_MODES)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        for name, v in (("max_samples", max_samples), ("bn_samples", bn_samples)):
            # a negative count used to slice off samples silently (randperm(n)[:-1])
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                  or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1 or None, got {v!r}")
        splits, task = split_data(data)
        self.device, self.dtype = model_device_dtype(model)
        ytrain = splits["train"][1]
        self.loss = loss if loss is not None else (
            default_loss(task) if task is not None else default_loss(ytrain))
        check_loss_fits(self.loss, ytrain)
        g = torch.Generator().manual_seed(int(seed))
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        for name, (x, y) in splits.items():
            if x.shape[0] != y.shape[0]:
                raise ShapeError(f"split {name!r}: {x.shape[0]} inputs but {y.shape[0]} targets")
            if max_samples is not None and max_samples < x.shape[0]:
                idx = torch.randperm(x.shape[0], generator=g)[:max_samples].sort().values
                x, y = x[idx], y[idx]
            x = x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)
            y = y.to(self.device, self.dtype) if y.is_floating_point() else y.to(self.device)
            self.splits[name] = (x, y)
        self.batch_size = batch_size
        self.frozen = frozenset(
            (n for n, p in model.named_parameters() if not p.requires_grad)
            if frozen is None else frozen)
        self.copy = copy.deepcopy(model)
        for p in self.copy.parameters():
            p.requires_grad_(False)
        self.copy.eval()
        self.names = [n for n, _ in self.copy.named_parameters()]
        _, self.layout = flatten({n: p for n, p in self.copy.named_parameters()})
        self.dim = sum(p.numel() for p in self.copy.parameters())
        self.bn_modules = [m for m in self.copy.modules()
                           if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bn = bn if self.bn_modules else "keep"
        xtr = self.splits["train"][0]
        if bn_samples is not None and bn_samples < xtr.shape[0]:
            idx = torch.randperm(xtr.shape[0], generator=g)[:bn_samples].sort().values
            xtr = xtr[idx]
        if bn_inputs is not None:
            if tuple(bn_inputs.shape[1:]) != tuple(xtr.shape[1:]):
                raise ShapeError(f"bn_inputs: expected samples of shape {tuple(xtr.shape[1:])}, "
                                 f"got {tuple(bn_inputs.shape[1:])}")
            xtr = bn_inputs.to(self.device, self.dtype)
        self._bn_inputs = xtr
        self._own_buffers = {n: b.detach().clone() for n, b in self.copy.named_buffers()}
        unknown = sorted(self.frozen - set(self.names))
        if unknown:
            raise ConfigError(f"frozen: expected parameter names of the model, got {unknown[:3]}")
        self.trainable_mask: Tensor | None = None
        if self.frozen:
            self.trainable_mask = torch.cat([
                torch.full((shape.numel(),), 0.0 if n in self.frozen else 1.0,
                           dtype=self.dtype, device=self.device) for n, shape in self.layout])

    @property
    def bn_inputs(self) -> Tensor:
        """The inputs BatchNorm statistics are re-estimated from."""
        return self._bn_inputs

    @property
    def buffers(self) -> dict[str, Tensor]:
        """The template model's own buffers (used when ``evaluate`` gets none)."""
        return self._own_buffers

    # -- parameter vectors -------------------------------------------------------------
    def vector(self, source: nn.Module | Mapping[str, Tensor]) -> Tensor:
        """The flat parameter vector of a model (same architecture) or a parameter dict."""
        params = dict(source.named_parameters()) if isinstance(source, nn.Module) else source
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ShapeError(f"expected parameters {missing[:3]}... of the template model, "
                             f"got a source without them")
        out = []
        for (n, shape) in self.layout:
            t = params[n].detach()
            if tuple(t.shape) != tuple(shape):
                raise ShapeError(f"parameter {n!r}: expected shape {tuple(shape)}, "
                                 f"got {tuple(t.shape)}")
            out.append(t.to(self.device, self.dtype).reshape(-1))
        return torch.cat(out) if out else torch.empty(0, device=self.device, dtype=self.dtype)

    def params(self, theta: Tensor) -> dict[str, Tensor]:
        """θ as a parameter dict (views into θ)."""
        return unflatten(theta, self.layout)

    def load(self, theta: Tensor, buffers: Mapping[str, Tensor] | None = None) -> nn.Module:
        """Load θ (and buffers, or re-estimated BN statistics) into the private copy."""
        if theta.numel() != self.dim:
            raise ShapeError(f"expected a parameter vector of length {self.dim}, "
                             f"got {theta.numel()}")
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta.to(self.device, self.dtype),
                                                self.copy.parameters())
            src = self._own_buffers if buffers is None else buffers
            for n, b in self.copy.named_buffers():
                if n in src:
                    b.copy_(src[n])
        if self.bn == "recompute":
            self.recompute_bn()
        return self.copy

    def recompute_bn(self) -> None:
        """Re-estimate BatchNorm running statistics of the copy from the training inputs.

        The inputs are cut into ``ceil(n / batch_size)`` batches of near-equal size (never a
        trailing batch of 1 sample, which BatchNorm cannot normalize in training mode), and
        batch ``k`` of ``n_k`` samples is averaged in with momentum ``n_k / (n_1 + ... + n_k)``:
        the running mean is the exact mean over all ``n`` samples whatever ``batch_size``
        (the running variance the sample-weighted mean of the batch variances).
        """
        x = self._bn_inputs
        n = x.shape[0]
        if n < 2:
            from deepscope.errors import DataError
            raise DataError(f"re-estimating BatchNorm statistics needs at least 2 training "
                            f"samples, got {n} (use bn='keep' or more samples)")
        chunks = torch.tensor_split(x, max(1, min(math.ceil(n / self.batch_size), n // 2)))
        saved = [(m, m.momentum) for m in self.bn_modules]
        try:
            for m in self.bn_modules:
                m.reset_running_stats()
                m.train()
            seen = 0
            with torch.no_grad():
                for xb in chunks:
                    seen += xb.shape[0]
                    for m in self.bn_modules:
                        m.momentum = xb.shape[0] / seen  # cumulative, sample-weighted
                    self.copy(xb)
        finally:
            for m, mom in saved:
                m.momentum = mom
            self.copy.eval()

    def evaluate(self, theta: Tensor, splits=None, *,
                 buffers: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """``{f"{split}_loss": ..., f"{split}_accuracy": ...}`` at θ for the given splits."""
        names = list(self.splits) if splits is None else (
            [splits] if isinstance(splits, str) else list(splits))
        for s in names:
            if s not in self.splits:
                raise unknown_name("split", s, tuple(self.splits))
        model = self.load(theta, buffers)
        out = {}
        for s in names:
            x, y = self.splits[s]
            loss, acc = evaluate_tensors(model, x, y, self.loss, self.batch_size)
            out[f"{s}_loss"] = loss
            out[f"{s}_accuracy"] = acc
        return out

    def loss_at(self, theta: Tensor, split: str = "train") -> float:
        return self.evaluate(theta, split)[f"{split}_loss"]
