"""The small residual network of a ``{"arch": "resnet"}`` spec.

The CIFAR family of He, Zhang, Ren & Sun, "Deep residual learning for image recognition"
(CVPR 2016, section 4.2): a 3x3 stem convolution, then ``len(blocks)`` stages of basic
residual blocks with ``width * 2**s`` channels in stage ``s``; the first block of every
stage after the first halves the spatial size with stride 2 and uses a 1x1 projection
shortcut (option B of the paper); then global average pooling and a linear head. The
defaults ``blocks=[2, 2, 2]``, ``width=16`` give a ResNet-14.

Submodule names are regular, so code that permutes units (weight matching) can rely on
them::

    stem.conv, stem.bn, stem.act
    stages.{s}.{b}.conv1, .bn1, .act1, .conv2, .bn2, .shortcut[.conv, .bn], .act2
    pool, flatten, head

Without ``batchnorm`` every ``bn*`` is an ``nn.Identity`` (same names, no parameters) and
the convolutions carry biases; with it, convolutions have no bias (BatchNorm's shift
replaces it). ``(C, H, W)`` inputs use 2-D convolutions, ``(C, L)`` inputs 1-D ones, and a
flat ``(L,)`` input is read as a one-channel signal ``(1, L)``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from deepscope.nets._common import check_input, make_activation

__all__ = ["ResNet", "BasicBlock"]


class _Ops:
    """Constructors for 1-D or 2-D layers, with or without BatchNorm."""

    def __init__(self, two_d: bool, batchnorm: bool, activation: str):
        self.conv_cls = nn.Conv2d if two_d else nn.Conv1d
        self.norm_cls = nn.BatchNorm2d if two_d else nn.BatchNorm1d
        self.pool_cls = nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d
        self.batchnorm = batchnorm
        self.activation = activation

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
        return self.conv_cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                             bias=not self.batchnorm)

    def norm(self, c: int) -> nn.Module:
        return self.norm_cls(c) if self.batchnorm else nn.Identity()

    def act(self) -> nn.Module:
        return make_activation(self.activation)


class BasicBlock(nn.Module):
    """``act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions."""

    def __init__(self, ops: _Ops, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = ops.conv(c_in, c_out, 3, stride)
        self.bn1 = ops.norm(c_out)
        self.act1 = ops.act()
        self.conv2 = ops.conv(c_out, c_out, 3)
        self.bn2 = ops.norm(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(OrderedDict(
                conv=ops.conv(c_in, c_out, 1, stride), bn=ops.norm(c_out)))
        else:
            self.shortcut = nn.Identity()
        self.act2 = ops.act()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + self.shortcut(x))


class ResNet(nn.Module):
    """Residual network built from a completed ``"resnet"`` spec."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        self.input_shape = tuple(spec["input_shape"])
        self.add_channel = len(self.input_shape) == 1
        conv_shape = (1, *self.input_shape) if self.add_channel else self.input_shape
        ops = _Ops(len(conv_shape) == 3, spec["batchnorm"], spec["activation"])

        width = spec["width"]
        self.stem = nn.Sequential(OrderedDict(
            conv=ops.conv(conv_shape[0], width, 3), bn=ops.norm(width), act=ops.act()))
        stages = []
        c_in = width
        for s, n_blocks in enumerate(spec["blocks"]):
            c_out = width * 2 ** s
            blocks = [BasicBlock(ops, c_in if b == 0 else c_out, c_out,
                                 2 if (b == 0 and s > 0) else 1) for b in range(n_blocks)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = ops.pool_cls(1)
        self.flatten = nn.Flatten(start_dim=-len(conv_shape))
        self.head = nn.Linear(c_in, spec["num_outputs"])

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.input_shape, "resnet")
        if self.add_channel:
            x = x.unsqueeze(-2)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.flatten(self.pool(x)))
