"""deepscope checkpoints: one ``.safetensors`` file with everything a probe needs.

Layout:
- tensors: the model's ``state_dict`` (parameters and buffers) under their own names, and
  optionally the initial parameters under ``init.<name>`` (distance-from-initialization
  measures need them);
- metadata (strings): ``deepscope_format`` (``"1"``), ``deepscope_version``, and JSON values
  ``arch`` (the completed architecture spec), ``dataset`` (the completed dataset spec),
  ``train`` (the training config), ``seed``, ``metrics`` (final train/test loss and accuracy).

No pickle anywhere: loading a checkpoint never runs code from the file. Files are written
atomically (temporary file + rename).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepscope._io import atomic_write, json_meta, read_safetensors_metadata
from deepscope.errors import CheckpointError, DeepscopeError
from deepscope.result import _jsonable

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "is_checkpoint",
           "FORMAT_VERSION", "INIT_PREFIX"]

FORMAT_VERSION = "1"
INIT_PREFIX = "init."


def _tensors_for_file(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors: store private copies.
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: Mapping | None = None,
                    dataset: Mapping | None = None, train: Mapping | None = None,
                    seed: int | None = None, metrics: Mapping | None = None,
                    init_params: Mapping[str, Tensor] | None = None) -> Path:
    """Write ``model`` and its provenance to one safetensors file (atomically).

    ``arch`` defaults to ``model.deepscope_spec`` (set by :func:`deepscope.nets.build_model`);
    without any spec the file still holds the weights, but :func:`load_checkpoint` cannot
    rebuild the module.
    """
    from safetensors.torch import save_file
    from deepscope import __version__

    path = Path(path)
    arch = dict(arch) if arch is not None else getattr(model, "deepscope_spec", None)
    tensors = _tensors_for_file(model.state_dict())
    if init_params is not None:
        tensors.update(_tensors_for_file(init_params, INIT_PREFIX))
    meta = {"deepscope_format": FORMAT_VERSION, "deepscope_version": __version__}
    for key, value in (("arch", arch), ("dataset", dataset), ("train", train),
                       ("seed", seed), ("metrics", metrics)):
        if value is not None:
            meta[key] = json.dumps(_jsonable(value), sort_keys=True, default=_json_default,
                                   allow_nan=False)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _json_default(x: Any) -> Any:
    if isinstance(x, Tensor) and x.numel() == 1:
        return x.item()
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    raise TypeError(f"not JSON-serializable: {type(x).__name__}")


def is_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a safetensors file written by :func:`save_checkpoint`."""
    try:
        return "deepscope_format" in read_safetensors_metadata(path)
    except DeepscopeError:
        return False


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and its provenance."""

    path: Path
    model: nn.Module
    arch: dict[str, Any]
    dataset_spec: dict[str, Any] | None
    train_config: dict[str, Any] | None
    seed: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    init_params: dict[str, Tensor] | None = None

    def dataset(self):
        """Rebuild the dataset the model was trained on (from the stored spec)."""
        if self.dataset_spec is None:
            raise CheckpointError(f"{self.path}: the checkpoint stores no dataset spec")
        from deepscope.data import load_dataset
        return load_dataset(self.dataset_spec)

    @property
    def loss_name(self) -> str:
        """The loss the model was trained with: the config's, the recorded one, or by task."""
        loss = (self.train_config or {}).get("loss") or self.metrics.get("loss_name")
        if loss:
            return loss
        if self.dataset_spec is None:
            return "cross_entropy"
        return "mse" if self.dataset().task == "regression" else "cross_entropy"

    @property
    def loss_fn(self):
        """The training loss as a callable ``(outputs, targets) -> scalar``."""
        return torch.nn.functional.mse_loss if self.loss_name == "mse" \
            else torch.nn.functional.cross_entropy

    def init_model(self) -> nn.Module:
        """The model at initialization (needs the initial weights in the file)."""
        if self.init_params is None:
            raise CheckpointError(f"{self.path}: the checkpoint stores no initial weights")
        from deepscope.nets import build_model
        m = build_model(self.arch)
        state = m.state_dict()
        state.update(self.init_params)
        m.load_state_dict(state)
        return m.eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild model, specs and metrics from a deepscope checkpoint.

    Raises :class:`CheckpointError` for a missing, truncated or corrupt file, a safetensors
    file that is not a deepscope checkpoint, or weights that do not fit the stored spec.
    """
    from deepscope._io import read_tensors
    from deepscope.nets import build_model

    path = Path(path)
    meta = read_safetensors_metadata(path)
    if "deepscope_format" not in meta:
        raise CheckpointError(
            f"{path}: a safetensors file without deepscope metadata; expected a checkpoint "
            f"written by `deepscope train` (bare weights need an architecture spec or factory)")
    if meta["deepscope_format"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta['deepscope_format']!r}, "
                              f"this deepscope reads format {FORMAT_VERSION!r}")
    arch = json_meta(meta, "arch", path)
    if arch is None:
        raise CheckpointError(f"{path}: the checkpoint has no architecture spec")
    tensors = read_tensors(path)
    init = {k[len(INIT_PREFIX):]: v for k, v in tensors.items() if k.startswith(INIT_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(INIT_PREFIX)}
    try:
        model = build_model(arch)
    except DeepscopeError as exc:
        raise CheckpointError(f"{path}: stored architecture spec is invalid ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({msg})"
                              ) from None
    model.eval()
    return Checkpoint(path=path, model=model, arch=arch,
                      dataset_spec=json_meta(meta, "dataset", path),
                      train_config=json_meta(meta, "train", path),
                      seed=json_meta(meta, "seed", path),
                      metrics=json_meta(meta, "metrics", path, {}) or {},
                      init_params=init or None)
