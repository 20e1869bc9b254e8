"""Weight initialization schemes for the built-in architectures.

Every weight matrix (a Linear weight, a convolution kernel viewed as
``out_channels x (in_channels * prod(kernel))``, each LSTM ``weight_ih``/``weight_hh``) is
drawn from the chosen scheme; biases are set to zero and normalization layers to weight 1,
bias 0:

- ``"default"``: PyTorch's own ``reset_parameters`` (nothing is changed here).
- ``"he"``: ``N(0, 2 / fan_in)`` -- He, Zhang, Ren & Sun, "Delving deep into rectifiers",
  ICCV 2015 (``kaiming_normal_``, fan-in mode, ReLU gain).
- ``"glorot"``: ``N(0, 2 / (fan_in + fan_out))`` -- Glorot & Bengio, "Understanding the
  difficulty of training deep feedforward neural networks", AISTATS 2010 (``xavier_normal_``).
- ``"orthogonal"``: a uniformly random (semi-)orthogonal matrix, ``W Wᵀ = I`` when
  ``out <= in`` and ``Wᵀ W = I`` otherwise -- Saxe, McClelland & Ganguli, "Exact solutions
  to the nonlinear dynamics of learning in deep linear neural networks", ICLR 2014.

Randomness comes from the global torch RNG; :func:`deepscope.nets.build_model` forks and
seeds it so that building with a seed is deterministic and leaves the caller's RNG alone.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from deepscope.errors import unknown_name
from deepscope.nets.spec import INITS

__all__ = ["initialize"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _he(w: Tensor) -> None:
    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")


def _glorot(w: Tensor) -> None:
    nn.init.xavier_normal_(w)


def _orthogonal(w: Tensor) -> None:
    nn.init.orthogonal_(w)


_SCHEMES: dict[str, Callable[[Tensor], None]] = {
    "he": _he, "glorot": _glorot, "orthogonal": _orthogonal,
}


@torch.no_grad()
def initialize(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialize ``model`` in place with ``scheme`` (one of :data:`INITS`); return it.

    Weight tensors with at least two dimensions get the scheme, one-dimensional ``bias``
    tensors are zeroed, normalization layers get weight 1 and bias 0. ``"default"`` leaves
    the model as PyTorch constructed it.
    """
    if scheme not in INITS:
        raise unknown_name("init", scheme, INITS)
    if scheme == "default":
        return model
    draw = _SCHEMES[scheme]
    for module in model.modules():
        if isinstance(module, _NORMS):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
            continue
        for name, p in module.named_parameters(recurse=False):
            if p.dim() >= 2:
                draw(p)
            elif name.startswith("bias"):
                nn.init.zeros_(p)
    return model
