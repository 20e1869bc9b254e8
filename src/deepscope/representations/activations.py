"""Layer activations: what each chosen module outputs (or receives) for a batch of inputs.

``capture_activations(model, x, layers)`` runs ``model`` over ``x`` in mini-batches, in eval
mode and without gradients, with forward hooks on the chosen modules; the hooks are removed and
every module's train/eval flag restored afterwards, so the model is left exactly as it was
(:func:`deepscope._params.state_fingerprint` unchanged). With a ``device`` other than the
model's, a private deep copy is moved there instead. Each activation is flattened per sample:
``(N, D)`` with ``D`` the product of the per-sample shape, on the compute device.

Layer selection (``layers``):

- ``None``: the defaults of :func:`default_layers` (the representation after every hidden
  block, then the output);
- ``"leaves"``: every leaf module (no children), in registration order;
- ``"children"``: the top-level children (containers such as ``ModuleList`` expanded);
- a module name (``"fc1"``, ``"stages.0.1"``; ``""`` is the model itself), a name followed by
  ``":input"`` (the first tensor the module receives, e.g. ``"head:input"``), ``"re:REGEX"``
  (``re.search`` on module names), a class name (``"Linear"``) or an ``nn.Module`` subclass;
- a list of those. A plain name that matches nothing raises :class:`ConfigError` listing the
  module names.

Outputs that are tuples or lists (``nn.LSTM`` returns ``(output, (h, c))``) contribute their
first tensor. A module called several times in one forward pass keeps its last call.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from deepscope._device import resolve_device
from deepscope._params import check_input_dtype, eval_mode
from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, DataError, ModelError, ShapeError

__all__ = ["LayerRef", "default_layers", "resolve_layers", "capture_activations",
           "model_device", "resolve_data", "INPUT_LAYER"]

#: Name of the pseudo-layer holding the (flattened) inputs themselves.
INPUT_LAYER = "input"
_INPUT_SUFFIX = ":input"
# modules that only reshape or are the identity in eval mode: skipped by generic defaults
_PASSIVE = (nn.Dropout, nn.Identity, nn.Flatten, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
            nn.AlphaDropout)
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class LayerRef:
    """One captured point: the output (or input) of one module.

    Attributes:
        name: the row name (``"fc1"``, ``"head:input"``).
        module: the module's name in ``model.named_modules()`` (``""`` = the model).
        point: ``"output"`` or ``"input"``.
        type: the module's class name.
    """

    name: str
    module: str
    point: str
    type: str


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a stateless model."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def _ref(name: str, module: nn.Module, point: str = "output") -> LayerRef:
    label = name + _INPUT_SUFFIX if point == "input" else (name or "output")
    return LayerRef(label, name, point, type(module).__name__)


def _builtin_defaults(model: nn.Module) -> list[LayerRef] | None:
    from deepscope.nets.cnn import MiniAlexNet
    from deepscope.nets.lstm import LSTMClassifier
    from deepscope.nets.mlp import MLP
    from deepscope.nets.resnet import ResNet
    mods = dict(model.named_modules())
    if isinstance(model, MLP):
        names = [n for n, _ in model.named_children() if re.fullmatch(r"act\d+", n)]
        return [_ref(n, mods[n]) for n in [*names, "out"]]
    if isinstance(model, MiniAlexNet):
        out, last = [], {}
        for n, _ in model.features.named_children():  # the last module of each conv block
            i = re.sub(r"\D", "", n)
            last[i] = n
        out += [_ref(f"features.{n}", mods[f"features.{n}"]) for n in last.values()]
        out += [_ref(f"classifier.{n}", m) for n, m in model.classifier.named_children()
                if re.fullmatch(r"act\d+", n)]
        out.append(_ref("classifier.out", mods["classifier.out"]))
        return out
    if isinstance(model, ResNet):
        out = [_ref("stem", mods["stem"])]
        for s, stage in enumerate(model.stages):
            out += [_ref(f"stages.{s}.{b}", blk) for b, blk in enumerate(stage)]
        return out + [_ref("pool", mods["pool"]), _ref("head", mods["head"])]
    if isinstance(model, LSTMClassifier):
        return [_ref("head", mods["head"], "input"), _ref("head", mods["head"])]
    return None


def _children(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for n, m in model.named_children():
        full = f"{prefix}{n}"
        if isinstance(m, _CONTAINERS):
            out += _children(m, full + ".")
        else:
            out.append((full, m))
    return out


def default_layers(model: nn.Module) -> list[LayerRef]:
    """The default capture points of ``model``.

    - deepscope MLP: ``act1 .. actL`` (each hidden block after its nonlinearity), ``out``;
    - MiniAlexNet CNN: the end of each conv block (``features.pool{i}``, or ``bn{i}`` with
      batchnorm), ``classifier.act{i}``, ``classifier.out``;
    - ResNet: ``stem``, every residual block ``stages.{s}.{b}``, ``pool``, ``head``;
    - LSTM classifier: ``head:input`` (the feature vector the head reads: the last step's
      output) and ``head``;
    - any other model: its top-level children (``ModuleList``/``ModuleDict`` expanded),
      without dropout / identity / flatten modules; a model without children: itself.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    refs = _builtin_defaults(model)
    if refs is not None:
        return refs
    kids = [(n, m) for n, m in _children(model) if not isinstance(m, _PASSIVE)]
    if not kids:
        return [_ref("", model)]
    return [_ref(n, m) for n, m in kids]


def _type_names(m: nn.Module) -> set[str]:
    return {c.__name__ for c in type(m).__mro__}


def resolve_layers(model: nn.Module, layers=None) -> list[LayerRef]:
    """The capture points that ``layers`` selects (see the module docstring), model order."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if layers is None:
        return default_layers(model)
    named = list(model.named_modules())
    if isinstance(layers, str) and layers == "leaves":
        return [_ref(n, m) for n, m in named if not any(True for _ in m.children())]
    if isinstance(layers, str) and layers == "children":
        return [_ref(n, m) for n, m in _children(model)]
    if isinstance(layers, (str, re.Pattern, type)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise ConfigError(f"layers must be None, 'leaves', 'children', a name, 're:<regex>', "
                          f"a class or a list of those, got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ConfigError("layers: expected at least one layer, got an empty list")
    wanted: dict[tuple[str, str], LayerRef] = {}
    names = [n for n, _ in named]
    mods = dict(named)
    for item in layers:
        hits: list[LayerRef] = []
        if isinstance(item, re.Pattern) or (isinstance(item, str) and item.startswith("re:")):
            try:
                pat = item if isinstance(item, re.Pattern) else re.compile(item[3:])
            except re.error as exc:
                raise ConfigError(f"layers: invalid regex {item!r}: {exc}") from None
            hits = [_ref(n, m) for n, m in named if n and pat.search(n)]
        elif isinstance(item, str):
            base, point = item, "output"
            if item.endswith(_INPUT_SUFFIX):
                base, point = item[:-len(_INPUT_SUFFIX)], "input"
            if base == "output" and "output" not in mods and point == "output":
                base = ""
            if base in mods:
                hits = [_ref(base, mods[base], point)]
            elif point == "output":
                hits = [_ref(n, m) for n, m in named if n and item in _type_names(m)]
        elif isinstance(item, type) and issubclass(item, nn.Module):
            hits = [_ref(n, m) for n, m in named if n and isinstance(m, item)]
        else:
            raise ConfigError(f"layers entries must be module names, 're:<regex>' strings, "
                              f"class names or nn.Module classes, got {item!r}")
        if not hits and isinstance(item, str) and not item.startswith("re:"):
            shown = ", ".join(n or "''" for n in names[:30])
            more = f", ... ({len(names)} in all)" if len(names) > 30 else ""
            raise ConfigError(f"layers: {item!r} matched no module name or type; expected one "
                              f"of: {shown}{more} (or NAME:input, re:REGEX, a class name)")
        for h in hits:
            wanted.setdefault((h.module, h.point), h)
    if not wanted:
        raise ConfigError(f"layers {layers!r} selected no module")
    order = {n: i for i, (n, _) in enumerate(named)}
    # model order; a module's input comes before its output
    return sorted(wanted.values(), key=lambda r: (order[r.module], r.point == "output"))


def resolve_data(data, split: str = "train") -> tuple[Tensor, Tensor | None]:
    """``(x, y)`` from a deepscope Dataset (its ``split``), an ``(x, y)`` pair or inputs alone."""
    from deepscope.data import Dataset
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(data, Dataset):
        return data.split(split)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ConfigError(f"data must be a deepscope Dataset, an (x, y) pair or a tensor of "
                          f"inputs, got {type(data).__name__}")
    if y is not None:
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
        if y.shape[0] != x.shape[0]:
            raise ShapeError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if x.dim() < 1 or x.shape[0] == 0:
        raise DataError(f"expected a non-empty batch of inputs (N, ...), got shape "
                        f"{tuple(x.shape)}")
    return x, y


def _first_tensor(obj, ref: LayerRef) -> Tensor:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, Tensor):
                return o
    raise ModelError(f"layer {ref.name!r} ({ref.type}) produced {type(obj).__name__}, "
                     f"expected a tensor or a tuple starting with one")


def capture_activations(model: nn.Module, x, layers=None, *, batch_size: int = 512,
                        device=None, include_input: bool = False,
                        progress: bool = False) -> dict[str, Tensor]:
    """Activations of the chosen layers for inputs ``x``, flattened per sample.

    Args:
        model: any ``nn.Module`` (left untouched: hooks removed, modes restored).
        x: inputs ``(N, ...)`` (a tensor or array; a Dataset / ``(x, y)`` pair: its inputs).
        layers: see the module docstring; None = :func:`default_layers`.
        batch_size: samples per forward pass.
        device: where to run (None: the model's device; another device: a private copy).
        include_input: add the flattened inputs first, under ``"input"``.
        progress: a progress bar over batches.

    Returns:
        ``{layer name: (N, D) tensor}`` in model order, on the compute device, in the dtype
        the layer produced.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(x, Tensor):
        x, _ = resolve_data(x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise DataError(f"expected a non-empty batch of inputs (N, ...), got shape "
                        f"{tuple(x.shape)}")
    refs = resolve_layers(model, layers)
    explicit = layers is not None
    own = model_device(model)
    dev = own if device is None else resolve_device(device)
    net = model if dev == own else copy.deepcopy(model).to(dev)
    dtype = _model_dtype(net)
    mods = dict(net.named_modules())
    n = int(x.shape[0])
    store: dict[str, list[Tensor]] = {r.name: [] for r in refs}
    current: dict[str, Tensor] = {}
    state = {"bs": 0}

    def keep(ref: LayerRef, obj) -> None:
        t = _first_tensor(obj, ref).detach()
        if t.dim() == 0 or t.shape[0] != state["bs"]:
            raise ShapeError(f"layer {ref.name!r} ({ref.type}) gave shape {tuple(t.shape)} for "
                             f"a batch of {state['bs']}; expected the batch dimension first")
        # a copy: an in-place op later in the forward pass (nn.ReLU(inplace=True) after a
        # captured Linear/Conv/BatchNorm) would otherwise overwrite the stored activations
        current[ref.name] = t.reshape(t.shape[0], -1).clone()

    check_input_dtype(net, x)  # before the hooks: integer images get one clear error
    handles = []
    try:
        for ref in refs:
            m = mods[ref.module]
            if ref.point == "input":
                handles.append(m.register_forward_pre_hook(
                    lambda mod, args, ref=ref: keep(ref, args)))
            else:
                handles.append(m.register_forward_hook(
                    lambda mod, args, out, ref=ref: keep(ref, out)))
        inputs = []
        with torch.no_grad(), eval_mode(net):
            for i in progress_bar(range(0, n, batch_size), enabled=progress,
                                  desc="activations", unit="batch"):
                xb = x[i:i + batch_size].to(dev)
                if dtype is not None and xb.is_floating_point() and xb.dtype != dtype:
                    xb = xb.to(dtype)
                state["bs"] = int(xb.shape[0])
                current.clear()
                net(xb)
                missing = [r.name for r in refs if r.name not in current]
                if missing and explicit:
                    raise ModelError(f"layers {missing} were not called in the forward pass "
                                     f"of {type(model).__name__}; choose modules it runs")
                for name, t in current.items():
                    store[name].append(t)
                if include_input:
                    inputs.append(xb.reshape(xb.shape[0], -1))
    finally:
        for h in handles:
            h.remove()
    out: dict[str, Tensor] = {}
    if include_input:
        out[INPUT_LAYER] = torch.cat(inputs)
    for ref in refs:
        parts = store[ref.name]
        if len(parts) == 0:
            continue  # a default layer the forward pass never reached
        if ref.name == INPUT_LAYER and include_input:
            raise ConfigError(f"a module named {INPUT_LAYER!r} clashes with the input row; "
                              f"pass include_input=False")
        out[ref.name] = torch.cat(parts)
    if len(out) == 0:
        raise ModelError(f"none of the layers {[r.name for r in refs]} ran in the forward "
                         f"pass of {type(model).__name__}")
    return out


def layer_types(model: nn.Module, layers=None) -> dict[str, str]:
    """``{capture name: module class name}`` for the selection (``"input"`` -> ``"Input"``)."""
    return {INPUT_LAYER: "Input", **{r.name: r.type for r in resolve_layers(model, layers)}}
