"""The fully connected network (multi-layer perceptron) of a ``{"arch": "mlp"}`` spec.

Layers, in order (an ``nn.Sequential`` with named children)::

    flatten, [fc{i}, (bn{i}), act{i}, (drop{i})] for i = 1..len(widths), out

``fc{i}`` is ``Linear(d_{i-1}, widths[i-1])`` with ``d_0 = prod(input_shape)``; ``bn{i}`` is a
``BatchNorm1d`` between the linear map and the activation (Ioffe & Szegedy, ICML 2015),
present only with ``batchnorm``; ``drop{i}`` is ``Dropout(dropout)`` (Srivastava et al.,
JMLR 2014), present only when ``dropout > 0``; ``out`` is ``Linear(widths[-1], num_outputs)``.
``bias`` applies to every linear layer. ``widths=[]`` gives a linear model.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from deepscope.nets._common import check_input, make_activation

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """Multi-layer perceptron built from a completed ``"mlp"`` spec."""

    def __init__(self, spec: Mapping[str, Any]):
        input_shape = tuple(spec["input_shape"])
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["flatten"] = nn.Flatten(start_dim=-len(input_shape))
        d = math.prod(input_shape)
        for i, w in enumerate(spec["widths"], start=1):
            layers[f"fc{i}"] = nn.Linear(d, w, bias=spec["bias"])
            if spec["batchnorm"]:
                layers[f"bn{i}"] = nn.BatchNorm1d(w)
            layers[f"act{i}"] = make_activation(spec["activation"])
            if spec["dropout"] > 0:
                layers[f"drop{i}"] = nn.Dropout(spec["dropout"])
            d = w
        layers["out"] = nn.Linear(d, spec["num_outputs"], bias=spec["bias"])
        super().__init__(layers)
        self.input_shape = input_shape

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.input_shape, "mlp")
        return super().forward(x)
