"""Layer -> weight matrices: which matrices of a model (or a bare tensor) get a spectrum.

Every weight is turned into a stack of ``num_matrices`` matrices of shape ``(N, M)`` with
``N >= M`` (transposed when needed; the eigenvalues of ``WᵀW`` do not depend on it). The
spectrum of a layer is the pooled eigenvalues of all its slices (Martin & Mahoney, JMLR 2021;
the ``weightwatcher`` convention for Conv2d).

Conventions (``module_matrices``):

* ``Linear`` (and subclasses), ``Embedding``/``EmbeddingBag``, Hugging Face ``Conv1D`` (class
  named ``Conv1D`` whose ``.weight`` is ``(nx, nf)``; ``transformers`` is not imported): one
  matrix. Types ``"Linear"``, ``"Embedding"``, ``"EmbeddingBag"``, ``"HFConv1D"``.
* ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``: ``conv="slices"`` (default) cuts the weight
  ``(a, b, *k)`` into ``prod(k)`` matrices ``W[:, :, i, j, ...]`` of shape ``(a, b)`` and pools
  them, exactly as weightwatcher does for Conv2d; ``conv="reshape"`` gives one
  ``(a, b * prod(k))`` matrix. For a convolution ``(a, b) = (out, in/groups)``; for a
  transposed convolution PyTorch stores ``(in, out/groups, *k)``, so a slice is the transpose
  of the ``(out/groups x in)`` map at that kernel position (same singular values) and the
  reshape is the matrix of the adjoint convolution. Grouped convolutions are sliced as stored:
  the ``groups`` diagonal blocks of each position are stacked into one ``(out, in/groups)``
  matrix (weightwatcher's behaviour, so numbers stay comparable); depthwise convolutions
  therefore give single-column slices.
* ``nn.MultiheadAttention``: the packed ``in_proj_weight`` ``(3E, E)`` is split into rows
  ``<name>.in_proj.q``, ``.k``, ``.v`` (types ``"MultiheadAttention.q"`` ...); with
  ``kdim``/``vdim`` != ``E`` the separate ``q/k/v_proj_weight`` give the same three rows. Its
  ``out_proj`` child gives ``<name>.out_proj`` of type ``"MultiheadAttention.out_proj"`` and is
  not listed again as a Linear.
* ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: each ``weight_ih_l{k}[_reverse]`` and
  ``weight_hh_l{k}[_reverse]`` is split per gate, LSTM ``i, f, g, o`` and GRU ``r, z, n``
  (PyTorch's storage order): rows ``<name>.weight_ih_l0.i``, types ``"LSTM.weight_ih.i"``
  (layer index and direction live in the name, not the type). Plain RNNs have no gates
  (``"RNN.weight_ih"``); an LSTM's projection ``weight_hr_l{k}`` is one matrix.
* Only modules that carry a parameter of rank >= 2 produce rows: BatchNorm/LayerNorm scales and
  biases are vectors, not matrices, and are not listed. A module of any other type with a
  rank >= 2 parameter is listed with ``skip_reason = "unsupported module type X"``, never
  dropped silently. A parameter shared with an earlier row (weight tying) is listed as skipped.
* Size rules (a row stays listed, with the reason): ``min(N, M) < min_dim`` (default 1),
  ``num_matrices * M < min_evals`` (default 8 = weightwatcher's ``DEFAULT_MIN_EVALS``, which it
  applies to the pooled count ``M * rf``; with the defaults the analyzed layers are exactly
  weightwatcher's), ``max(N, M) > max_dim`` (default None: no cap; weightwatcher drops
  ``N > 50000`` and ``M * rf > 15000``). Non-floating, non-finite and meta tensors are listed
  as skipped too.

Matrices are views of the model's tensors (conv slices are copied on access): never modify
``LayerMatrices.matrices`` in place. The model itself is never mutated.
"""
from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deepscope.errors import ConfigError, unknown_name

__all__ = [
    "LayerMatrices",
    "module_matrices",
    "tensor_matrices",
    "CONV_MODES",
    "DEFAULT_MIN_DIM",
    "DEFAULT_MIN_EVALS",
]

CONV_MODES = ("slices", "reshape")
DEFAULT_MIN_DIM = 1
DEFAULT_MIN_EVALS = 8  # weightwatcher 0.7.7 constants.DEFAULT_MIN_EVALS

_GATES = {"LSTM": "ifgo", "GRU": "rzn"}
_RNN_SUFFIX = re.compile(r"_l\d+(_reverse)?$")
_CONV_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(eq=False)
class LayerMatrices:
    """The weight matrices of one layer (or one part of it: a gate, q/k/v).

    ``N >= M`` are the dimensions of each matrix after transposing; ``num_matrices`` is the
    number of pooled slices (``prod(kernel)`` for sliced convolutions, else 1), so the layer
    has ``num_evals = num_matrices * M`` eigenvalues. ``skip_reason`` is None for a layer to
    analyze, else a one-line reason. ``module`` is the module path (or state-dict key) it came
    from and ``shape`` the stored tensor's shape.
    """

    name: str
    type: str
    N: int
    M: int
    num_matrices: int
    skip_reason: str | None = None
    module: str = ""
    shape: tuple[int, ...] = ()
    _load: Callable[[], Tensor] | None = field(default=None, repr=False)

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None

    @property
    def num_evals(self) -> int:
        return self.num_matrices * self.M

    @property
    def matrices(self) -> Tensor | None:
        """``(num_matrices, N, M)`` tensor (built on each access), or None when skipped."""
        if self.skip_reason is not None or self._load is None:
            return None
        return self._load()


@dataclass
class Spec:
    """A row before size limits and data checks: how to cut ``key``'s tensor into matrices.

    ``cut(raw)`` returns the ``(num, rows, cols)`` stack before orientation. Used by
    :mod:`deepscope.weights.sources` to list file tensors without loading them.
    """

    name: str
    type: str
    module: str
    key: str
    shape: tuple[int, ...]
    num: int = 1
    rows: int = 0
    cols: int = 0
    cut: Callable[[Tensor], Tensor] | None = None
    reason: str | None = None
    obj: nn.Module | None = None


# ----------------------------------------------------------------------------- cutting

def _whole(w: Tensor) -> Tensor:
    return w.unsqueeze(0)


def _conv_cut(shape: Sequence[int], conv: str) -> tuple[int, int, int, Callable]:
    a, b, k = int(shape[0]), int(shape[1]), [int(s) for s in shape[2:]]
    if conv == "reshape":
        return 1, a, b * math.prod(k), lambda w: w.reshape(a, -1).unsqueeze(0)
    nd = len(k)
    perm = tuple(range(2, 2 + nd)) + (0, 1)
    return math.prod(k), a, b, lambda w: w.permute(*perm).reshape(-1, a, b)


def _rows_cut(start: int, stop: int) -> Callable[[Tensor], Tensor]:
    return lambda w: w[start:stop].unsqueeze(0)


def matrix_spec(name: str, type_: str, module: str, key: str, shape: Sequence[int],
                conv: str, obj: nn.Module | None = None) -> Spec:
    """Spec of a whole tensor: rank 2 -> one matrix, rank 3-5 -> a conv weight, else skipped."""
    shape = tuple(int(s) for s in shape)
    spec = Spec(name, type_, module, key, shape, obj=obj)
    if len(shape) == 2:
        spec.rows, spec.cols, spec.cut = shape[0], shape[1], _whole
    elif 3 <= len(shape) <= 5:
        spec.num, spec.rows, spec.cols, spec.cut = _conv_cut(shape, conv)
    elif len(shape) < 2:
        spec.reason = f"{len(shape)}-D tensor: not a matrix"
    else:
        spec.reason = f"{len(shape)}-D tensor: expected a 2-D matrix or a 3-5-D conv weight"
    return spec


def split_spec(name: str, type_: str, module: str, key: str, shape: Sequence[int],
               parts: int, index: int, obj: nn.Module | None = None) -> Spec:
    """Spec of the ``index``-th of ``parts`` equal row blocks of a packed 2-D weight."""
    shape = tuple(int(s) for s in shape)
    h = shape[0] // parts
    return Spec(name, type_, module, key, shape, 1, h, shape[1],
                _rows_cut(index * h, (index + 1) * h), obj=obj)


# ----------------------------------------------------------------------------- limits

def check_limits(conv: str, min_dim: int, min_evals: int, max_dim: int | None) -> None:
    """Validate the shared options (raises ConfigError with expected-vs-got)."""
    if conv not in CONV_MODES:
        raise unknown_name("conv mode", conv, CONV_MODES)
    for label, v in (("min_dim", min_dim), ("min_evals", min_evals)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{label} must be an integer >= 0, got {v!r}")
    if max_dim is not None and (isinstance(max_dim, bool) or not isinstance(max_dim, int)
                                or max_dim < 1):
        raise ConfigError(f"max_dim must be None or an integer >= 1, got {max_dim!r}")


def _all_finite(t: Tensor) -> bool:
    """Fast check: a single reduction (no boolean copy); a NaN/inf entry makes the sum
    non-finite. A finite-entry sum can still overflow to inf: then count exactly."""
    with torch.no_grad():
        total = t.detach().sum()
    return bool(torch.isfinite(total))


def finalize(spec: Spec, raw: Tensor | None, *, min_dim: int = DEFAULT_MIN_DIM,
             min_evals: int = DEFAULT_MIN_EVALS, max_dim: int | None = None) -> LayerMatrices:
    """Apply size/data checks to ``spec`` with its stored tensor ``raw`` -> a LayerMatrices."""
    n, m = max(spec.rows, spec.cols), min(spec.rows, spec.cols)
    row = LayerMatrices(spec.name, spec.type, n, m, spec.num, spec.reason, spec.module,
                        spec.shape)
    if row.skip_reason is not None:
        return row
    reason = None
    if m < min_dim:
        reason = f"min(N, M) = {m} < min_dim {min_dim}"
    elif spec.num * m < min_evals:
        reason = (f"num_evals = num_matrices * M = {spec.num} * {m} = {spec.num * m}"
                  f" < min_evals {min_evals}")
    elif max_dim is not None and n > max_dim:
        reason = f"max(N, M) = {n} > max_dim {max_dim}"
    elif raw is None:
        reason = "no tensor data"
    elif raw.is_meta:
        reason = "meta tensor: no data"
    elif not raw.is_floating_point():
        reason = f"dtype {raw.dtype} is not floating point"
    elif not _all_finite(raw):
        bad = int((~torch.isfinite(spec.cut(raw.detach()))).sum())  # this row's part only
        if bad:
            reason = f"not finite: {bad} NaN/inf entries"
    if reason is not None:
        row.skip_reason = reason
        return row
    cut, transpose = spec.cut, spec.rows < spec.cols
    data = raw.detach()

    def load() -> Tensor:
        mats = cut(data)
        return mats.mT if transpose else mats

    row._load = load
    return row


# ----------------------------------------------------------------------------- filter

class LayerFilter:
    """The ``layers=`` selection: exact names, regexes, and layer types, combined by union.

    Accepted entries (a single entry or an iterable of them):

    * a plain string: an exact row name (``"features.0"``, ``"attn.in_proj.q"``), the exact path
      of a module, which selects every row of it and of its submodules (``"attn"``: q, k, v and
      out_proj; ``"features"``: all of that Sequential), or a type name: the row's type
      (``"MultiheadAttention.q"``), its family (``"LSTM"``) or any class name in the module's
      MRO (``"Linear"`` also selects subclasses). A plain string that selects nothing raises
      ConfigError (typo guard).
    * ``"re:<pattern>"`` or a compiled ``re.Pattern``: ``pattern.search(row name)``.
    * an ``nn.Module`` subclass: ``isinstance(module, cls)``, or ``cls.__name__`` is the row's
      type family (``nn.MultiheadAttention`` also selects its ``out_proj`` row).
    """

    def __init__(self, layers):
        self.all = layers is None
        self.strings: list[str] = []
        self.patterns: list[re.Pattern] = []
        self.classes: list[type] = []
        if self.all:
            return
        if isinstance(layers, (str, re.Pattern, type)):
            layers = [layers]
        if not isinstance(layers, Iterable):
            raise ConfigError("layers must be None, a name, 're:<regex>', a compiled regex, an "
                              f"nn.Module class or a list of those, got {type(layers).__name__}")
        for item in layers:
            if isinstance(item, re.Pattern):
                self.patterns.append(item)
            elif isinstance(item, str) and item.startswith("re:"):
                try:
                    self.patterns.append(re.compile(item[3:]))
                except re.error as e:
                    raise ConfigError(f"layers: invalid regex {item!r}: {e}") from None
            elif isinstance(item, str):
                self.strings.append(item)
            elif isinstance(item, type) and issubclass(item, nn.Module):
                self.classes.append(item)
            else:
                raise ConfigError("layers entries must be names, 're:<regex>' strings, compiled "
                                  f"regexes or nn.Module classes, got {item!r}")

    @staticmethod
    def _type_names(spec: Spec) -> set[str]:
        names = {spec.type, spec.type.split(".")[0]}
        if spec.obj is not None:
            names.update(c.__name__ for c in type(spec.obj).__mro__)
        return names

    def select(self, specs: list[Spec]) -> list[Spec]:
        """The specs selected; raises ConfigError for plain strings that match nothing."""
        if self.all:
            return list(specs)
        used: set[str] = set()
        out = []
        for s in specs:
            hit = False
            keys = {s.name} | self._type_names(s)
            for text in self.strings:
                if text in keys or s.module == text or s.module.startswith(text + "."):
                    used.add(text)
                    hit = True
            hit = hit or any(p.search(s.name) for p in self.patterns)
            hit = hit or any(isinstance(s.obj, c) or c.__name__ == s.type.split(".")[0]
                             for c in self.classes)
            if hit:
                out.append(s)
        missing = [t for t in self.strings if t not in used]
        if missing:
            names = [s.name for s in specs]
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20
                                             else "")
            raise ConfigError(f"layers: {missing!r} matched no layer name, module name or type; "
                              f"expected one of: {shown or '(no layers)'}")
        return out


# ----------------------------------------------------------------------------- modules

def _canonical_type(mod: nn.Module) -> str:
    for cls in _CONV_TYPES:
        if isinstance(mod, cls):
            return cls.__name__
    for cls in (nn.Linear, nn.EmbeddingBag, nn.Embedding):
        if isinstance(mod, cls):
            return cls.__name__
    return type(mod).__name__


def _mha_specs(name: str, mod: nn.MultiheadAttention) -> list[tuple[Spec, Tensor]]:
    out = []
    if mod.in_proj_weight is not None:
        w = mod.in_proj_weight
        for i, p in enumerate("qkv"):
            s = split_spec(f"{name}.in_proj.{p}", f"MultiheadAttention.{p}", name,
                           f"{name}.in_proj_weight", w.shape, 3, i, obj=mod)
            out.append((s, w))
    else:
        for p in "qkv":
            w = getattr(mod, f"{p}_proj_weight")
            s = matrix_spec(f"{name}.in_proj.{p}", f"MultiheadAttention.{p}", name,
                            f"{name}.{p}_proj_weight", w.shape, "slices", obj=mod)
            out.append((s, w))
    ow = mod.out_proj.weight
    out.append((matrix_spec(f"{name}.out_proj", "MultiheadAttention.out_proj",
                            f"{name}.out_proj", f"{name}.out_proj.weight", ow.shape, "slices",
                            obj=mod.out_proj), ow))
    return out


def _rnn_specs(name: str, mod: nn.RNNBase) -> list[tuple[Spec, Tensor]]:
    family = {"LSTM": "LSTM", "GRU": "GRU"}.get(mod.mode, "RNN")
    gates = _GATES.get(family, "")
    out = []
    for pname in mod._flat_weights_names:
        if not pname.startswith("weight_"):
            continue
        w = getattr(mod, pname)
        base = _RNN_SUFFIX.sub("", pname)
        key = f"{name}.{pname}" if name else pname
        if base in ("weight_ih", "weight_hh") and gates:
            for i, g in enumerate(gates):
                s = split_spec(f"{key}.{g}", f"{family}.{base}.{g}", name, key, w.shape,
                               len(gates), i, obj=mod)
                out.append((s, w))
        else:
            out.append((matrix_spec(key, f"{family}.{base}", name, key, w.shape, "slices",
                                    obj=mod), w))
    return out


def _module_rows(name: str, mod: nn.Module, conv: str) -> list[tuple[Spec, Tensor]] | None:
    """Specs of a supported module, or None when the module type is not handled here."""
    row = name or "weight"
    if isinstance(mod, nn.MultiheadAttention):
        return _mha_specs(name, mod)
    if isinstance(mod, nn.RNNBase):
        return _rnn_specs(name, mod)
    w = getattr(mod, "weight", None)
    if not isinstance(w, Tensor):
        return None
    key = f"{name}.weight" if name else "weight"
    if isinstance(mod, _CONV_TYPES):
        return [(matrix_spec(row, _canonical_type(mod), name, key, w.shape, conv, obj=mod), w)]
    if isinstance(mod, (nn.Linear, nn.Embedding, nn.EmbeddingBag)) or (
            type(mod).__name__ == "Conv1D" and w.ndim == 2):
        type_ = "HFConv1D" if type(mod).__name__ == "Conv1D" else _canonical_type(mod)
        spec = matrix_spec(row, type_, name, key, w.shape, conv, obj=mod)
        if w.ndim != 2:
            spec.reason = f"{type_} weight of rank {w.ndim}: expected a 2-D matrix"
        return [(spec, w)]
    return None


def _unsupported_rows(name: str, mod: nn.Module) -> list[tuple[Spec, Tensor]]:
    out = []
    for pname, p in mod.named_parameters(recurse=False):
        if p.ndim < 2:
            continue
        key = f"{name}.{pname}" if name else pname
        row = (name or pname) if pname == "weight" else key
        extra = "" if pname == "weight" else f" (parameter '{pname}')"
        spec = Spec(row, type(mod).__name__, name, key, tuple(p.shape), num=0, obj=mod,
                    reason=f"unsupported module type {type(mod).__name__}{extra}")
        out.append((spec, p))
    return out


def module_specs(model: nn.Module, conv: str = "slices") -> list[tuple[Spec, Tensor]]:
    """Walk ``model.named_modules()`` and return (spec, stored tensor) for every matrix row."""
    from torch.nn.utils import parametrize

    from deepscope._params import eval_mode

    out: list[tuple[Spec, Tensor]] = []
    claimed: list[str] = []
    for name, mod in model.named_modules():
        if any(name == c or name.startswith(c + ".") for c in claimed):
            continue
        if isinstance(mod, nn.MultiheadAttention):
            claimed.append(f"{name}.out_proj" if name else "out_proj")
        if parametrize.is_parametrized(mod):
            claimed.append(f"{name}.parametrizations" if name else "parametrizations")
            with torch.no_grad(), eval_mode(mod):  # parametrizations may update buffers in train
                rows = _module_rows(name, mod, conv)
            rows = [(s, w.detach().clone()) for s, w in rows] if rows else rows
        else:
            rows = _module_rows(name, mod, conv)
        if rows is None:
            rows = _unsupported_rows(name, mod)
        for spec, w in rows:
            if isinstance(w, nn.parameter.UninitializedParameter):
                spec.reason = spec.reason or "uninitialized lazy parameter"
                spec.num, spec.rows, spec.cols = 0, 0, 0
            out.append((spec, w))
    return out


def _mark_tied(pairs: list[tuple[Spec, Tensor]]) -> None:
    """A tensor shared by several modules (weight tying) is analyzed at its first row only."""
    owner: dict[int, str] = {}
    for spec, w in pairs:
        if spec.reason is None:
            first = owner.setdefault(id(w), spec.module)
            if first != spec.module:
                spec.reason = f"weight shared with '{first}' (tied), analyzed there"


def module_matrices(model: nn.Module, *, layers=None, conv: str = "slices",
                    min_dim: int = DEFAULT_MIN_DIM, min_evals: int = DEFAULT_MIN_EVALS,
                    max_dim: int | None = None) -> list[LayerMatrices]:
    """List the weight matrices of ``model`` in ``named_modules`` order (see module docstring).

    Args:
        model: any ``nn.Module``; it is only read (``.detach()`` views, no flag changes).
        layers: selection (names, ``"re:..."``, compiled regexes, classes, type names); see
            :class:`LayerFilter`. None keeps every row.
        conv: ``"slices"`` (pooled per-kernel-position matrices) or ``"reshape"``.
        min_dim, min_evals, max_dim: size rules; failing rows stay listed with a reason.

    Returns:
        One :class:`LayerMatrices` per matrix row, skipped rows included.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected an nn.Module, got {type(model).__name__}")
    check_limits(conv, min_dim, min_evals, max_dim)
    pairs = module_specs(model, conv)
    chosen = {id(s) for s in LayerFilter(layers).select([s for s, _ in pairs])}
    pairs = [(s, w) for s, w in pairs if id(s) in chosen]
    _mark_tied(pairs)
    return [finalize(s, w, min_dim=min_dim, min_evals=min_evals, max_dim=max_dim)
            for s, w in pairs]


def tensor_matrices(name: str, tensor: Tensor, *, conv: str = "slices",
                    min_dim: int = DEFAULT_MIN_DIM, min_evals: int = DEFAULT_MIN_EVALS,
                    max_dim: int | None = None, type: str = "Tensor") -> LayerMatrices:
    """The matrices of one bare tensor (from a state dict or safetensors file).

    Rank 2 -> one matrix; rank 3-5 -> a conv weight ``(out, in, *k)`` cut per ``conv``;
    rank 0-1 or > 5 -> a row skipped with the reason. ``type`` labels the row.
    """
    if not isinstance(tensor, Tensor):
        raise ConfigError(f"tensor {name!r}: expected a torch.Tensor, got "
                          f"{builtins.type(tensor).__name__}")
    check_limits(conv, min_dim, min_evals, max_dim)
    spec = matrix_spec(name, type, name, name, tensor.shape, conv)
    return finalize(spec, tensor, min_dim=min_dim, min_evals=min_evals, max_dim=max_dim)
