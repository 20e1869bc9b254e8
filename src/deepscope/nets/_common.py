"""Small pieces shared by the built-in architectures: activations and input-shape checks."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from deepscope.errors import ShapeError, unknown_name
from deepscope.nets.spec import ACTIVATIONS

__all__ = ["make_activation", "check_input"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``"relu"``, ``"tanh"`` or ``"gelu"``."""
    if name not in _ACTIVATIONS:
        raise unknown_name("activation", name, ACTIVATIONS)
    return _ACTIVATIONS[name]()


def check_input(x: Tensor, input_shape: Sequence[int], arch: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` ends in ``input_shape``.

    Only the trailing dimensions are checked, so a batch ``(N, *input_shape)`` passes, and
    so does a single example under ``torch.func.vmap``.
    """
    k = len(input_shape)
    if x.dim() < k or tuple(x.shape[x.dim() - k:]) != tuple(input_shape):
        raise ShapeError(
            f"{arch} built for inputs of shape (N, {', '.join(map(str, input_shape))}); "
            f"got a tensor of shape {tuple(x.shape)}")
