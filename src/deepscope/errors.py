"""The deepscope error family.

Every error raised for bad input is a :class:`DeepscopeError`; its message says what was
expected and what arrived. The CLI turns these into exit code 2 and one line on stderr.
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DeepscopeError",
    "ConfigError",
    "ShapeError",
    "DataError",
    "CheckpointError",
    "UntrustedPickleError",
    "TrainingDivergedError",
    "ModelError",
    "unknown_name",
]


class DeepscopeError(Exception):
    """Base class of every error deepscope raises on purpose."""


class ConfigError(DeepscopeError, ValueError):
    """An option, name or spec field is unknown or has the wrong type/value."""


class ShapeError(DeepscopeError, ValueError):
    """Tensors or specs whose shapes do not fit together."""


class DataError(DeepscopeError):
    """A dataset file is missing, unreadable or in the wrong format."""


class CheckpointError(DeepscopeError):
    """A checkpoint or weights file is missing, truncated, corrupt or of the wrong kind."""


class UntrustedPickleError(CheckpointError):
    """A file needs unpickling arbitrary objects and the caller did not opt in."""


class ModelError(DeepscopeError):
    """A model that a probe cannot handle (no parameters, non-deterministic, ...)."""


class TrainingDivergedError(DeepscopeError):
    """The loss became NaN or infinite during training."""

    def __init__(self, message: str, *, epoch: int, step: int):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


def unknown_name(kind: str, got: object, choices: Iterable[str]) -> ConfigError:
    """Build the standard 'unknown X' error: ``unknown optimizer 'sgdd': expected one of ...``."""
    options = ", ".join(sorted(choices))
    return ConfigError(f"unknown {kind} {got!r}: expected one of {options}")
