"""Architecture specs: the JSON-serializable dicts that built-in models are made from.

A spec names an architecture and its hyper-parameters::

    {"arch": "mlp", "input_shape": [64], "num_outputs": 10, "init": "default",
     "widths": [512, 512], "activation": "relu", "dropout": 0.0,
     "batchnorm": False, "bias": True}

:func:`complete_arch_spec` checks every key and fills in the defaults. The completed dict
is what gets stored in checkpoint metadata and hashed into sweep task ids, so it is
canonical: plain ``dict``/``list``/``int``/``float``/``bool``/``str`` values only, and
completing it again returns an equal dict.

Common keys (every architecture):

- ``arch`` (required): one of :data:`ARCHITECTURES`.
- ``input_shape`` (required): the shape of one example, channel first: ``[D]``, ``[C, L]``
  or ``[C, H, W]`` (the MLP accepts any rank; it flattens).
- ``num_outputs`` (required): number of logits (classes) or regression targets.
- ``init``: ``"default"`` (PyTorch's), ``"he"``, ``"glorot"`` or ``"orthogonal"`` (see
  :mod:`deepscope.nets.init`).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from deepscope.errors import ConfigError, ShapeError, unknown_name

__all__ = ["ARCHITECTURES", "INITS", "ACTIVATIONS", "complete_arch_spec"]

ARCHITECTURES: tuple[str, ...] = ("mlp", "cnn", "resnet", "lstm")
INITS: tuple[str, ...] = ("default", "he", "glorot", "orthogonal")
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu")

#: MiniAlexNet channel counts and fully connected widths at ``width=1.0``
#: (Zhang et al. 2017; Martin & Mahoney 2018/2021).
CNN_BASE_CHANNELS: tuple[int, int] = (96, 256)
CNN_BASE_FC: tuple[int, int] = (384, 192)

_REQUIRED = ("arch", "input_shape", "num_outputs")


# ----------------------------------------------------------------------------- validators
def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_int(key: str, v: Any) -> int:
    if not _is_int(v) or int(v) < 1:
        raise ConfigError(f"{key!r}: expected a positive int, got {v!r}")
    return int(v)


def _int_list(key: str, v: Any, *, length: int | None = None,
              allow_empty: bool = False) -> list[int]:
    want = "a list of positive ints" if length is None else f"a list of {length} positive ints"
    if not isinstance(v, (list, tuple)) or not all(_is_int(x) and int(x) >= 1 for x in v):
        raise ConfigError(f"{key!r}: expected {want}, got {v!r}")
    if length is not None and len(v) != length:
        raise ConfigError(f"{key!r}: expected {want}, got {len(v)} entries: {list(v)!r}")
    if not allow_empty and len(v) == 0:
        raise ConfigError(f"{key!r}: expected a non-empty list of positive ints, got []")
    return [int(x) for x in v]


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key!r}: expected true or false, got {v!r}")
    return v


def _probability(key: str, v: Any) -> float:
    if not _is_real(v) or not 0.0 <= float(v) < 1.0:
        raise ConfigError(f"{key!r}: expected a float in [0, 1), got {v!r}")
    return float(v)


def _positive_float(key: str, v: Any) -> float:
    if not _is_real(v) or not math.isfinite(float(v)) or float(v) <= 0.0:
        raise ConfigError(f"{key!r}: expected a positive finite number, got {v!r}")
    return float(v)


def _choice(kind: str, options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise unknown_name(kind, v, options)
        return v
    return check


def _widths(key: str, v: Any) -> list[int]:
    return _int_list(key, v, allow_empty=True)


def _pair(key: str, v: Any) -> list[int] | None:
    return None if v is None else _int_list(key, v, length=2)


# ------------------------------------------------------------------------------- schemas
_COMMON: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "init": ("default", _choice("init", INITS)),
}

# key -> (default, validator); a default of None is resolved by the arch's finisher.
_SCHEMAS: dict[str, dict[str, tuple[Any, Callable[[str, Any], Any]]]] = {
    "mlp": {
        "widths": ([512, 512], _widths),
        "activation": ("relu", _choice("activation", ACTIVATIONS)),
        "dropout": (0.0, _probability),
        "batchnorm": (False, _bool),
        "bias": (True, _bool),
    },
    "cnn": {
        "width": (1.0, _positive_float),
        "channels": (None, _pair),
        "fc": (None, _pair),
        "activation": ("relu", _choice("activation", ACTIVATIONS)),
        "dropout": (0.0, _probability),
        "batchnorm": (False, _bool),
    },
    "resnet": {
        "blocks": ([2, 2, 2], _int_list),
        "width": (16, _positive_int),
        "activation": ("relu", _choice("activation", ACTIVATIONS)),
        "batchnorm": (True, _bool),
    },
    "lstm": {
        "hidden": (64, _positive_int),
        "layers": (1, _positive_int),
        "bidirectional": (False, _bool),
        "dropout": (0.0, _probability),
    },
}

# Allowed ranks of input_shape per architecture.
_RANKS: dict[str, tuple[int, ...] | None] = {
    "mlp": None, "cnn": (1, 2, 3), "resnet": (1, 2, 3), "lstm": (1, 2, 3),
}


def _copy(default: Any) -> Any:
    return list(default) if isinstance(default, list) else default


def _scaled(base: tuple[int, ...], width: float) -> list[int]:
    return [max(1, int(round(b * width))) for b in base]


def _finish_cnn(out: dict[str, Any]) -> None:
    if out["channels"] is None:
        out["channels"] = _scaled(CNN_BASE_CHANNELS, out["width"])
    if out["fc"] is None:
        out["fc"] = _scaled(CNN_BASE_FC, out["width"])


_FINISHERS: dict[str, Callable[[dict[str, Any]], None]] = {"cnn": _finish_cnn}


def arch_keys(arch: str) -> tuple[str, ...]:
    """All keys a spec of ``arch`` may have, in canonical order."""
    if arch not in _SCHEMAS:
        raise unknown_name("architecture", arch, ARCHITECTURES)
    return (*_REQUIRED, *_COMMON, *_SCHEMAS[arch])


def complete_arch_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an architecture spec and fill in the defaults; return a new dict.

    The input is never modified. Unknown keys, missing required keys and values of the
    wrong type raise :class:`~deepscope.errors.ConfigError`; an ``input_shape`` of a rank the
    architecture cannot take raises :class:`~deepscope.errors.ShapeError`. The result is
    JSON-serializable (lists, not tuples) and ``complete_arch_spec(result) == result``.

    For ``"cnn"``, ``channels`` and ``fc`` default to the MiniAlexNet sizes
    ``[96, 256]`` and ``[384, 192]`` scaled by ``width`` (rounded, at least 1); given
    explicitly, they override the scaling.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"architecture spec: expected a dict, got {type(spec).__name__}")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ConfigError(
            f"architecture spec: missing required key(s) {', '.join(map(repr, missing))}; "
            f"got keys {sorted(map(str, spec))}")
    arch = spec["arch"]
    if not isinstance(arch, str) or arch not in _SCHEMAS:
        raise unknown_name("architecture", arch, ARCHITECTURES)
    schema = {**_COMMON, **_SCHEMAS[arch]}
    allowed = arch_keys(arch)
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in {arch!r} spec: expected keys from "
                f"{', '.join(allowed)}")

    shape = _int_list("input_shape", spec["input_shape"])
    ranks = _RANKS[arch]
    if ranks is not None and len(shape) not in ranks:
        raise ShapeError(
            f"{arch!r} expects input_shape [D], [C, L] or [C, H, W]; got {shape!r} "
            f"(rank {len(shape)})")
    out: dict[str, Any] = {
        "arch": arch,
        "input_shape": shape,
        "num_outputs": _positive_int("num_outputs", spec["num_outputs"]),
    }
    for key, (default, check) in schema.items():
        out[key] = check(key, spec[key]) if key in spec else _copy(default)
    finish = _FINISHERS.get(arch)
    if finish is not None:
        finish(out)
    return out
