"""Building a built-in model from its architecture spec, and counting parameters.

``build_model(spec, seed)`` completes the spec (:func:`deepscope.nets.complete_arch_spec`),
constructs the network of its ``arch`` (:mod:`~deepscope.nets.mlp`, :mod:`~deepscope.nets.cnn`,
:mod:`~deepscope.nets.resnet`, :mod:`~deepscope.nets.lstm`), applies the ``init`` scheme
(:mod:`~deepscope.nets.init`) and attaches the completed spec as ``model.deepscope_spec``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from deepscope.errors import ConfigError
from deepscope.nets.cnn import MiniAlexNet
from deepscope.nets.init import initialize
from deepscope.nets.lstm import LSTMClassifier
from deepscope.nets.mlp import MLP
from deepscope.nets.resnet import ResNet
from deepscope.nets.spec import complete_arch_spec

__all__ = ["build_model", "count_parameters"]

_BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "mlp": MLP,
    "cnn": MiniAlexNet,
    "resnet": ResNet,
    "lstm": LSTMClassifier,
}


def _construct(spec: dict[str, Any]) -> nn.Module:
    model = _BUILDERS[spec["arch"]](spec)
    return initialize(model, spec["init"])


def build_model(spec: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """Build the float32 CPU model described by ``spec``, in training mode.

    With an int ``seed`` the initial weights are a function of ``(spec, seed)`` only: the
    model is built under a forked, freshly seeded torch RNG, and the caller's global RNG
    state is left as it was. With ``seed=None`` the global torch RNG is used (and advanced).
    The completed spec is attached as the plain attribute ``model.deepscope_spec``.
    """
    full = complete_arch_spec(spec)
    if seed is None:
        model = _construct(full)
    else:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: expected a non-negative int or None, got {seed!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _construct(full)
    model.deepscope_spec = copy.deepcopy(full)
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (shared tensors counted once).

    With ``trainable_only`` only parameters with ``requires_grad`` are counted. Buffers
    (BatchNorm running statistics) are not parameters and never counted.
    """
    return sum(p.numel() for p in model.parameters()
               if p.requires_grad or not trainable_only)
