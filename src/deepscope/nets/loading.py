"""Loading user models: deepscope checkpoints, state dicts + spec or factory, HF directories.

``load_model`` accepts
- an ``nn.Module`` (returned as is);
- a deepscope checkpoint (``.safetensors`` with deepscope metadata);
- a ``.pt``/``.pth``/``.bin``/``.safetensors`` state dict together with an architecture spec
  (``spec=``) or a factory (``factory="pkg.module:fn"``, called with no arguments);
- a ``.pt`` file holding a whole pickled module, only with ``trust_pickle=True`` (unpickling
  runs code from the file);
- a Hugging Face model directory (``config.json`` + weights), through ``transformers``
  (optional extra ``deepscope[hf]``), never reaching the network (``local_files_only``).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from deepscope._io import read_tensors
from deepscope.errors import CheckpointError, ConfigError

__all__ = ["load_model", "resolve_factory", "is_hf_directory"]


def resolve_factory(factory: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Turn ``"pkg.module:fn"`` into the callable it names."""
    if callable(factory):
        return factory
    if not isinstance(factory, str) or ":" not in factory:
        raise ConfigError(f"factory must look like 'package.module:function', got {factory!r}")
    mod_name, _, attr = factory.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"factory {factory!r}: cannot import module {mod_name!r} ({exc})"
                          ) from None
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ConfigError(f"factory {factory!r}: module {mod_name!r} has no {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"factory {factory!r} is not callable")
    return fn


def is_hf_directory(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def _load_hf(path: Path) -> nn.Module:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{path} is a Hugging Face model directory; loading it needs the "
                          f"optional extra: pip install 'deepscope[hf]'") from None
    try:
        model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: transformers could not load it ({exc})") from None
    return model.eval()


def load_model(source: Any, *, spec: Mapping | None = None,
               factory: str | Callable[[], nn.Module] | None = None,
               trust_pickle: bool = False) -> nn.Module:
    """Return an ``nn.Module`` for ``source`` (see the module docstring for what it accepts)."""
    if isinstance(source, nn.Module):
        return source
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        if is_hf_directory(path):
            return _load_hf(path)
        raise CheckpointError(f"{path}: a directory without config.json; expected a model "
                              f"file or a Hugging Face model directory")
    from deepscope.train.checkpoint import is_checkpoint, load_checkpoint
    if path.suffix == ".safetensors" and is_checkpoint(path):
        return load_checkpoint(path).model
    obj = read_tensors(path, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        return obj.eval()
    if spec is None and factory is None:
        raise ConfigError(f"{path} holds a bare state dict ({len(obj)} tensors); pass an "
                          f"architecture spec (spec=...) or a factory ('pkg.module:fn') to "
                          f"rebuild the module")
    if spec is not None:
        from deepscope.nets import build_model
        model = build_model(dict(spec))
    else:
        model = resolve_factory(factory)()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"factory returned {type(model).__name__}, expected an nn.Module")
    obj = {k: v for k, v in obj.items() if not k.startswith("init.")}
    try:
        model.load_state_dict(obj, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model ({msg})") from None
    return model.eval()
