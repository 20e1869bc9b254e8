"""The LSTM sequence classifier of a ``{"arch": "lstm"}`` spec.

A (stacked, optionally bidirectional) long short-term memory network -- Hochreiter &
Schmidhuber, "Long short-term memory", Neural Computation 1997 -- read out by a linear head
on its output at the last time step::

    lstm (batch_first) - (drop) - head

For a bidirectional LSTM the head sees the forward direction's output at the last step and
the backward direction's output at the first step (each direction's final state). ``dropout``
acts on the output of every LSTM layer: between stacked layers (PyTorch's ``dropout``
argument, used only when ``layers > 1``) and as ``drop`` before the head (present only when
``dropout > 0``).

Inputs are channel first, as everywhere in deepscope, and are read as sequences:

- ``(L,)``: ``L`` steps of one feature;
- ``(C, L)``: ``L`` steps of ``C`` features (e.g. MNIST-1D ``(1, 40)``);
- ``(C, H, W)``: ``H`` steps (image rows) of ``C * W`` features.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from deepscope.nets._common import check_input

__all__ = ["LSTMClassifier"]


class LSTMClassifier(nn.Module):
    """LSTM sequence classifier (or regressor) built from a completed ``"lstm"`` spec."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        self.input_shape = tuple(spec["input_shape"])
        rank = len(self.input_shape)
        features = {1: 1, 2: self.input_shape[0]}.get(rank)
        if features is None:
            features = self.input_shape[0] * self.input_shape[2]
        self.hidden = spec["hidden"]
        self.bidirectional = spec["bidirectional"]
        layers = spec["layers"]
        self.lstm = nn.LSTM(features, self.hidden, num_layers=layers, batch_first=True,
                            dropout=spec["dropout"] if layers > 1 else 0.0,
                            bidirectional=self.bidirectional)
        self.drop = nn.Dropout(spec["dropout"]) if spec["dropout"] > 0 else None
        self.head = nn.Linear(self.hidden * (2 if self.bidirectional else 1),
                              spec["num_outputs"])

    def as_sequence(self, x: Tensor) -> Tensor:
        """Turn inputs ``(..., *input_shape)`` into sequences ``(..., steps, features)``."""
        rank = len(self.input_shape)
        if rank == 1:
            return x.unsqueeze(-1)
        if rank == 2:
            return x.transpose(-1, -2)
        return x.movedim(-3, -2).flatten(-2)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.input_shape, "lstm")
        out, _ = self.lstm(self.as_sequence(x))
        if self.bidirectional:
            h = self.hidden
            last = torch.cat([out[..., -1, :h], out[..., 0, h:]], dim=-1)
        else:
            last = out[..., -1, :]
        if self.drop is not None:
            last = self.drop(last)
        return self.head(last)
