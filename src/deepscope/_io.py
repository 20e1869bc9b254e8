"""File helpers shared by checkpoints, model loading and the sweep engine.

- :func:`atomic_write` writes through a temporary file in the same folder and renames it, so a
  crash never leaves a half-written file under the final name.
- :func:`read_tensors` reads a weights file (safetensors or a ``.pt`` state dict) into a dict of
  tensors; unpickling anything but tensors needs ``trust_pickle=True``.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepscope.errors import CheckpointError, UntrustedPickleError

__all__ = ["atomic_write", "read_tensors", "read_safetensors_metadata", "torch_load",
           "state_dict_from",
           "SAFETENSORS_SUFFIXES", "PICKLE_SUFFIXES"]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: expected a file, got a directory")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty dict when it has none)."""
    from safetensors import safe_open
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import safe_open
    try:
        out = {}
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
        return out
    except Exception as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt safetensors file ({exc})") from None


_STATE_KEYS = ("state_dict", "model_state_dict", "model", "module")


def torch_load(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """``torch.load`` on CPU, memory-mapped when the format allows, with ``weights_only=True``;
    full unpickling (which runs code from the file) only with ``trust_pickle``."""
    path = Path(path)
    _check_file(path)
    weights_only = not trust_pickle
    try:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # the legacy (non-zip) format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise UntrustedPickleError(
                f"{path}: holds pickled Python objects (e.g. a whole nn.Module), not only "
                f"tensors; loading it runs code from the file. If you trust its source, pass "
                f"--trust-pickle / trust_pickle=True") from None
        raise CheckpointError(f"{path}: cannot unpickle ({exc})") from None
    except Exception as exc:  # zip/miniz errors, EOF, garbage bytes
        raise CheckpointError(f"{path}: unreadable or truncated PyTorch file "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None


def state_dict_from(obj: Any, path: Path) -> dict[str, Tensor] | nn.Module:
    """A tensor mapping, or a whole module (only reachable with trust_pickle), from a loaded
    file; a state dict nested under state_dict/model_state_dict/model/module is unwrapped."""
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, Tensor) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        keys = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors) "
                              f"or a dict with one under {', '.join(_STATE_KEYS)}; got a dict "
                              f"with keys {keys or '(none)'}")
    raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), "
                          f"got {type(obj).__name__}")


def read_tensors(path: str | Path, *, trust_pickle: bool = False
                 ) -> dict[str, Tensor] | nn.Module:
    """Read a weights file: a dict of tensors, or a whole module when it was pickled as one.

    ``.safetensors`` files are read directly; ``.pt``/``.pth``/``.bin`` through
    :func:`torch_load`. A state dict nested under ``state_dict``/``model`` is unwrapped.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return state_dict_from(torch_load(path, trust_pickle=trust_pickle), path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) == 8 and int.from_bytes(head, "little") < 100_000_000:
        return _read_safetensors(path)
    return state_dict_from(torch_load(path, trust_pickle=trust_pickle), path)


def json_meta(meta: Mapping[str, str], key: str, path: Path, default: Any = None) -> Any:
    """Decode a JSON-valued metadata entry; a malformed one is a CheckpointError."""
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON ({exc})") from None
