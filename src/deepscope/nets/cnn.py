"""MiniAlexNet, the small convolutional network of a ``{"arch": "cnn"}`` spec.

The network of Zhang, Bengio, Hardt, Recht & Vinyals, "Understanding deep learning requires
rethinking generalization" (ICLR 2017), in the form Martin & Mahoney used for their
batch-size and heavy-tailed self-regularization studies ("Implicit self-regularization in
deep neural networks", JMLR 2021)::

    features:   conv1 (5, c1) - act1 - pool1 - (bn1) - conv2 (5, c2) - act2 - pool2 - (bn2)
    classifier: flatten - fc1 (f1) - act1 - (drop1) - fc2 (f2) - act2 - (drop2) - out

Convolutions use kernel 5 with padding 2 ("same"), pooling is max-pooling with window 3,
stride 2 and padding 1, which halves every spatial size (rounding up) and so works from
8x8 digits to 32x32 CIFAR images. ``bn*`` (BatchNorm after each pooling, as in the Keras
MiniAlexNet of Martin & Mahoney) is present only with ``batchnorm``, ``drop*`` only when
``dropout > 0``. The defaults ``c1, c2 = 96, 256`` and ``f1, f2 = 384, 192`` are scaled by
``width`` (see :func:`deepscope.nets.complete_arch_spec`).

Inputs ``(C, H, W)`` use 2-D convolutions; ``(C, L)`` sequences such as MNIST-1D ``(1, 40)``
use 1-D ones; a flat ``(L,)`` input is read as a one-channel signal ``(1, L)``. The size of
the flattened features is found by a dry forward pass on zeros at build time.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from deepscope.nets._common import check_input, make_activation

__all__ = ["MiniAlexNet"]

KERNEL = 5
POOL = (3, 2, 1)  # window, stride, padding


class MiniAlexNet(nn.Module):
    """MiniAlexNet built from a completed ``"cnn"`` spec."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        self.input_shape = tuple(spec["input_shape"])
        self.add_channel = len(self.input_shape) == 1
        conv_shape = (1, *self.input_shape) if self.add_channel else self.input_shape
        two_d = len(conv_shape) == 3
        conv = nn.Conv2d if two_d else nn.Conv1d
        pool = nn.MaxPool2d if two_d else nn.MaxPool1d
        norm = nn.BatchNorm2d if two_d else nn.BatchNorm1d

        feats: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = conv_shape[0]
        for i, c in enumerate(spec["channels"], start=1):
            feats[f"conv{i}"] = conv(c_in, c, KERNEL, padding=KERNEL // 2)
            feats[f"act{i}"] = make_activation(spec["activation"])
            feats[f"pool{i}"] = pool(*POOL)
            if spec["batchnorm"]:
                feats[f"bn{i}"] = norm(c)
            c_in = c
        self.features = nn.Sequential(feats)
        n_flat = self._flat_size(conv_shape)

        head: OrderedDict[str, nn.Module] = OrderedDict()
        head["flatten"] = nn.Flatten(start_dim=-len(conv_shape))
        d = n_flat
        for i, f in enumerate(spec["fc"], start=1):
            head[f"fc{i}"] = nn.Linear(d, f)
            head[f"act{i}"] = make_activation(spec["activation"])
            if spec["dropout"] > 0:
                head[f"drop{i}"] = nn.Dropout(spec["dropout"])
            d = f
        head["out"] = nn.Linear(d, spec["num_outputs"])
        self.classifier = nn.Sequential(head)

    @torch.no_grad()
    def _flat_size(self, conv_shape: tuple[int, ...]) -> int:
        """Number of features after ``self.features`` for one example (dry run, eval mode)."""
        self.features.eval()
        try:
            out = self.features(torch.zeros(1, *conv_shape))
        finally:
            self.features.train()
        return int(out[0].numel())

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.input_shape, "cnn")
        if self.add_channel:
            x = x.unsqueeze(-2)
        return self.classifier(self.features(x))
