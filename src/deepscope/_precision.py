"""Measurements in float32 run at IEEE float32 precision, whatever the process-wide settings.

PyTorch lets float32 matrix products and convolutions trade precision for speed: TensorFloat-32
(10-bit mantissa) for cuDNN convolutions is on by default on Ampere and later GPUs, and
``torch.set_float32_matmul_precision("high" | "medium")`` (a common line in training scripts)
turns on TF32 for CUDA matmuls and TF32 / bfloat16 for oneDNN on CPUs. Those shortcuts move a
float32 result by ~1e-3 relative: a float32 top Hessian eigenvalue of a conv net, a margin
near the decision boundary or a loss along an interpolation path would then differ from the
same computation elsewhere by more than the accuracy deepscope states.

:func:`ieee_float32` (a context manager and a decorator) turns those shortcuts off for the
duration of a measurement and restores the previous settings afterwards, also on an exception.
PyTorch keeps two APIs for them: the legacy switches (``torch.set_float32_matmul_precision``,
``torch.backends.cudnn.allow_tf32``) and the per-operator ``fp32_precision`` flags
(``torch.backends.{cuda.matmul, cudnn.conv, cudnn.rnn, mkldnn.matmul, mkldnn.conv,
mkldnn.rnn}``), and it raises on reading a legacy switch once the two disagree. So the guard
switches through the legacy API (which keeps both consistent) and uses the per-operator flags
only for what the legacy switches leave on (a generic ``torch.backends.fp32_precision =
"tf32"``, oneDNN convolutions in bfloat16); on exit it restores the legacy switches and then
any per-operator flag that still differs from before. The public measurement functions
(``hessian``, ``surface``, ``interpolate``, ``connect``, ``align``, ``margins``, ``measures``,
``ntk``, ``gdv``, ``cka``, ``realization``, ``spectra``, ``activation_patterns``) run under
it; training does not (its speed settings are the user's).

The settings are process-wide, as with PyTorch's own ``torch.backends.*.flags`` context
managers: another thread that computes while a measurement runs sees IEEE precision too.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["ieee_float32", "precision_flags"]

F = TypeVar("F", bound=Callable)

#: (backend, operator) pairs of torch.backends that carry an ``fp32_precision`` flag
_SLOTS = (("cuda", "matmul"), ("cudnn", "conv"), ("cudnn", "rnn"),
          ("mkldnn", "matmul"), ("mkldnn", "conv"), ("mkldnn", "rnn"))


def _slot(backend: str, op: str):
    return getattr(getattr(torch.backends, backend, None), op, None)


def precision_flags() -> dict[str, str]:
    """The current ``fp32_precision`` of each operator slot (``"cuda.matmul": "tf32"``, ...),
    for the slots this PyTorch has."""
    out = {}
    for backend, op in _SLOTS:
        slot = _slot(backend, op)
        if slot is not None and hasattr(slot, "fp32_precision"):
            out[f"{backend}.{op}"] = slot.fp32_precision
    return out


_FAST = ("tf32", "bf16")  # fp32_precision values that trade precision for speed


def _set(flags: dict[str, str]) -> None:
    for key, value in flags.items():
        backend, op = key.split(".")
        _slot(backend, op).fp32_precision = value


def _legacy() -> tuple[str, bool] | None:
    """(matmul precision, cuDNN allow_tf32) if PyTorch can report them (it raises where the
    legacy and per-operator settings have been mixed)."""
    try:
        return torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return None


@contextmanager
def _ieee() -> Iterator[None]:
    saved, legacy = precision_flags(), _legacy()
    try:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        _set({k: "ieee" for k, v in precision_flags().items() if v in _FAST})
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy[0])
            torch.backends.cudnn.allow_tf32 = legacy[1]
        for key, value in saved.items():  # what still differs: inherited again if that
            if precision_flags().get(key) != value:  # gives the old value, else set
                _set({key: "none"})
                if precision_flags().get(key) != value:
                    _set({key: value})


def ieee_float32(fn: F | None = None):
    """``with ieee_float32(): ...`` or ``@ieee_float32``: float32 matmuls and convolutions at
    IEEE precision inside (no TF32 / bfloat16 shortcuts), the previous flags restored after."""
    if fn is None:
        return _ieee()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _ieee():
            return fn(*args, **kwargs)

    return wrapper
