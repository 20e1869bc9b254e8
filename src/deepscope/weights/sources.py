"""Resolve what the user handed in (a module, a weights file, a model directory) into rows.

:func:`iter_layer_matrices` accepts

* an ``nn.Module`` -> :func:`~deepscope.weights.matrices.module_matrices` (module types known);
* a ``.safetensors`` file: every tensor of rank >= 2 is a candidate. ``streaming=True`` reads
  one tensor at a time through ``safetensors.safe_open`` (lazily, as the iterator advances), so
  peak memory stays near one layer; otherwise the whole file is loaded first. A deepscope
  checkpoint (metadata key ``deepscope_format``) stores the initial weights under ``init.``;
  those tensors are not listed. The file's storage order is meaningless (``save_file`` sorts
  by dtype and name), so rows come in natural name order (``layers.2`` before ``layers.10``),
  shards included.
* a ``.pt``/``.pth``/``.bin``/``.ckpt`` file holding a state dict (or a dict with a
  ``state_dict``/``model_state_dict``/``model``/``module`` entry), loaded with
  ``torch.load(weights_only=True, mmap=True)``. A file that needs unpickling arbitrary objects
  (a whole pickled module) raises :class:`~deepscope.errors.UntrustedPickleError` unless
  ``trust_pickle=True``.
* a Hugging Face model directory: with ``transformers`` importable the model is built by
  ``AutoModel.from_pretrained(dir, local_files_only=True)`` (module types known; if that fails
  a warning is issued and the files are read); otherwise ``model.safetensors`` (or its sharded
  ``model.safetensors.index.json``), else ``pytorch_model.bin`` (or its index) are read as
  tensors.

Rows from bare tensors are named after their key with a trailing ``.weight`` removed, so a
model and its state dict give the same row names. Packed tensors are recognized by name as in
the module path: ``...in_proj_weight`` of shape ``(3E, E)`` -> ``in_proj.q/k/v`` rows; RNN
``weight_ih_l{k}``/``weight_hh_l{k}`` split per gate when the ``weight_hh`` sibling's shape
says LSTM (4 gates) or GRU (3). Anything else is of type ``"Tensor"``: rank 2 is a matrix,
rank 3-5 a conv weight ``(out, in, *k)``. Type filters (``layers=nn.Linear``, ``"Conv2d"``)
therefore select nothing among bare tensors; use names or regexes there.

Missing, unreadable or truncated files raise :class:`~deepscope.errors.CheckpointError`.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from itertools import groupby
from pathlib import Path

from safetensors import safe_open
from torch import Tensor, nn

from deepscope._io import state_dict_from, torch_load
from deepscope.errors import CheckpointError, ConfigError
from deepscope.weights.matrices import (DEFAULT_MIN_DIM, DEFAULT_MIN_EVALS, LayerFilter,
                                        LayerMatrices, Spec, check_limits, finalize,
                                        matrix_spec, module_matrices, split_spec)

__all__ = ["iter_layer_matrices"]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_RNN_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<base>weight_(?:ih|hh|hr))"
                      r"(?P<suffix>_l\d+(?:_reverse)?)$")
_EXPECTED = ("expected a .safetensors file, a .pt/.pth/.bin file holding a state dict, or a "
             "Hugging Face model directory")


def iter_layer_matrices(source, *, layers=None, conv: str = "slices",
                        min_dim: int = DEFAULT_MIN_DIM, min_evals: int = DEFAULT_MIN_EVALS,
                        max_dim: int | None = None, trust_pickle: bool = False,
                        streaming: bool = False) -> Iterator[LayerMatrices]:
    """Yield the weight-matrix rows of ``source`` (module, weights file or HF directory).

    ``layers``, ``conv``, ``min_dim``, ``min_evals`` and ``max_dim`` mean what they mean in
    :func:`~deepscope.weights.matrices.module_matrices`. Options are validated and the source
    is opened when this is called (errors are raised here, not at the first ``next``).
    """
    check_limits(conv, min_dim, min_evals, max_dim)
    limits = dict(min_dim=min_dim, min_evals=min_evals, max_dim=max_dim)
    filt = LayerFilter(layers)
    if isinstance(source, nn.Module):
        return iter(module_matrices(source, layers=layers, conv=conv, **limits))
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"expected an nn.Module or a path ({_EXPECTED}), "
                          f"got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory ({_EXPECTED})")
    if path.is_dir():
        return _hf_dir(path, filt, conv, limits, trust_pickle, streaming, layers)
    if _is_safetensors(path):
        return _safetensors_files([path], filt, conv, limits, streaming)
    return _torch_file(path, filt, conv, limits, trust_pickle, layers)


# ----------------------------------------------------------------------------- naming

def tensor_specs(entries: list[tuple[str, tuple[int, ...]]], conv: str) -> list[Spec]:
    """Specs for named tensors of rank >= 2 (file order), recognizing packed layouts by name."""
    shapes = dict(entries)
    out: list[Spec] = []
    taken: set[str] = set()
    for key, shape in entries:
        base = key[:-len(".weight")] if key.endswith(".weight") else key
        if base in taken:
            base = key
        taken.add(base)
        specs = _packed_specs(key, shape, shapes)
        out.extend(specs if specs is not None else
                   [matrix_spec(base, "Tensor", base, key, shape, conv)])
    return out


def _packed_specs(key: str, shape, shapes: Mapping) -> list[Spec] | None:
    if len(shape) != 2:
        return None
    if key.endswith("in_proj_weight") and shape[0] == 3 * shape[1]:
        prefix = key[:-len("in_proj_weight")]
        return [split_spec(f"{prefix}in_proj.{p}", f"MultiheadAttention.{p}",
                           prefix.rstrip("."), key, shape, 3, i) for i, p in enumerate("qkv")]
    for p in "qkv":
        if key.endswith(f"{p}_proj_weight"):
            prefix = key[:-len(f"{p}_proj_weight")]
            if all(f"{prefix}{q}_proj_weight" in shapes for q in "qkv"):
                return [matrix_spec(f"{prefix}in_proj.{p}", f"MultiheadAttention.{p}",
                                    prefix.rstrip("."), key, shape, "slices")]
    if key.endswith("out_proj.weight"):
        prefix = key[:-len("out_proj.weight")]
        if f"{prefix}in_proj_weight" in shapes or f"{prefix}q_proj_weight" in shapes:
            base = key[:-len(".weight")]
            return [matrix_spec(base, "MultiheadAttention.out_proj", base, key, shape,
                                "slices")]
    m = _RNN_KEY.match(key)
    if m is None:
        return None
    prefix, base, suffix = m["prefix"], m["base"], m["suffix"]
    hh, hr = shapes.get(f"{prefix}weight_hh{suffix}"), shapes.get(f"{prefix}weight_hr{suffix}")
    if hh is None:
        return None
    hidden = hr[1] if hr is not None else hh[1]
    family = {4: "LSTM", 3: "GRU", 1: "RNN"}.get(hh[0] // hidden if hh[0] % hidden == 0 else 0)
    if family is None:
        return None
    module = prefix.rstrip(".")
    if family == "RNN" or base == "weight_hr":
        return [matrix_spec(key, f"{family}.{base}", module, key, shape, "slices")]
    gates = "ifgo" if family == "LSTM" else "rzn"
    if shape[0] != len(gates) * hidden:
        return None
    return [split_spec(f"{key}.{g}", f"{family}.{base}.{g}", module, key, shape, len(gates), i)
            for i, g in enumerate(gates)]


def _rows(specs: list[Spec], get: Callable[[str], Tensor], conv_limits: dict
          ) -> Iterator[LayerMatrices]:
    """Load each selected key once (in order) and finalize its rows."""
    for key, group in groupby(specs, key=lambda s: s.key):
        group = list(group)
        raw = get(key) if any(s.reason is None for s in group) else None
        for s in group:
            yield finalize(s, raw, **conv_limits)
        del raw


# ----------------------------------------------------------------------------- safetensors

def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    if path.suffix in _TORCH_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror}); {_EXPECTED}") from None
    return len(head) == 9 and head[8:9] == b"{"


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # SafetensorError, OSError: both mean a bad/unreadable file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); expected a "
                              "complete .safetensors file (truncated or corrupt?)") from None


def _safetensors_entries(paths: list[Path]) -> tuple[list, dict]:
    entries, where = [], {}
    for path in paths:
        f = _open_safetensors(path)
        meta = f.metadata() or {}
        deepscope_ckpt = "deepscope_format" in meta
        for key in f.offset_keys():
            if deepscope_ckpt and key.startswith("init."):
                continue
            shape = tuple(f.get_slice(key).get_shape())
            if len(shape) >= 2:
                entries.append((key, shape))
                where[key] = path
    entries.sort(key=lambda e: _natural_key(e[0]))
    return entries, where


def _natural_key(name: str) -> list:
    """Sort key putting ``layers.2`` before ``layers.10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _safetensors_files(paths: list[Path], filt: LayerFilter, conv: str, limits: dict,
                       streaming: bool) -> Iterator[LayerMatrices]:
    entries, where = _safetensors_entries(paths)
    specs = filt.select(tensor_specs(entries, conv))
    if streaming:
        return _stream(specs, where, limits)
    tensors: dict[str, Tensor] = {}
    for path in paths:
        f = _open_safetensors(path)
        for key in {s.key for s in specs if where[s.key] == path}:
            tensors[key] = _read(f, key, path)
    return _rows(specs, tensors.__getitem__, limits)


def _read(f, key: str, path: Path) -> Tensor:
    try:
        return f.get_tensor(key)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read tensor {key!r} ({e}); expected a complete "
                              ".safetensors file") from None


def _stream(specs: list[Spec], where: dict, limits: dict) -> Iterator[LayerMatrices]:
    handles: dict[Path, object] = {}

    def get(key: str) -> Tensor:
        path = where[key]
        if path not in handles:
            handles.clear()  # one file open at a time; reopening only re-reads its header
            handles[path] = _open_safetensors(path)
        return _read(handles[path], key, path)

    yield from _rows(specs, get, limits)


# ----------------------------------------------------------------------------- torch.load

def _torch_file(path: Path, filt: LayerFilter, conv: str, limits: dict, trust_pickle: bool,
                layers) -> Iterator[LayerMatrices]:
    obj = state_dict_from(torch_load(path, trust_pickle=trust_pickle), path)
    if isinstance(obj, nn.Module):
        return iter(module_matrices(obj, layers=layers, conv=conv, **limits))
    entries = [(str(k), tuple(v.shape)) for k, v in obj.items() if v.ndim >= 2]
    specs = filt.select(tensor_specs(entries, conv))
    return _rows(specs, lambda k: obj[k], limits)


# ----------------------------------------------------------------------------- HF directories

def _hf_dir(path: Path, filt: LayerFilter, conv: str, limits: dict, trust_pickle: bool,
            streaming: bool, layers) -> Iterator[LayerMatrices]:
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        transformers = None
    if transformers is not None and (path / "config.json").exists():
        try:
            model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # unknown architecture, missing files, ...
            warnings.warn(f"{path}: transformers.AutoModel could not load it ({e}); reading the "
                          "weights files as bare tensors instead", stacklevel=3)
        else:
            return iter(module_matrices(model, layers=layers, conv=conv, **limits))
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (path / name).is_file():
            files = _shards(path, name)
            return _safetensors_files(files, filt, conv, limits, streaming)
    for name in ("pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (path / name).is_file():
            return _chain_torch(_shards(path, name), filt, conv, limits, trust_pickle, layers)
    found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "(empty)"
    raise CheckpointError(f"{path}: a directory without model.safetensors or pytorch_model.bin "
                          "(or their sharded .index.json); expected a Hugging Face model "
                          f"directory; found: {found}")


def _shards(path: Path, name: str) -> list[Path]:
    if not name.endswith(".index.json"):
        return [path / name]
    try:
        weight_map = json.loads((path / name).read_text())["weight_map"]
        files = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path / name}: expected a JSON index with a 'weight_map' of "
                              f"tensor names to shard files ({type(e).__name__}: {e})") from None
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path / name}: lists shard files that are missing: "
                              f"{', '.join(missing[:5])}")
    return [path / f for f in files]


def _chain_torch(files: list[Path], filt: LayerFilter, conv: str, limits: dict,
                 trust_pickle: bool, layers) -> Iterator[LayerMatrices]:
    if len(files) == 1:
        return _torch_file(files[0], filt, conv, limits, trust_pickle, layers)
    merged: dict[str, Tensor] = {}
    for f in files:
        obj = state_dict_from(torch_load(f, trust_pickle=trust_pickle), f)
        if isinstance(obj, nn.Module):
            raise CheckpointError(f"{f}: a pickled module inside a sharded checkpoint; expected "
                                  "state-dict shards")
        merged.update(obj)
    entries = [(str(k), tuple(v.shape)) for k, v in merged.items() if v.ndim >= 2]
    return _rows(filt.select(tensor_specs(entries, conv)), merged.__getitem__, limits)
