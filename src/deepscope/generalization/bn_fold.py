"""Fold eval-mode BatchNorm into the neighbouring convolution / linear layer.

Norm-based generalization measures (Jiang, Neyshabur, Mobahi, Krishnan & Bengio, "Fantastic
generalization measures and where to find them", ICLR 2020, section 3 and appendix C) are
computed on a network "with batch normalization folded into the preceding layer", so that
scaling a layer's weights into the BatchNorm does not change the measure. In eval mode
BatchNorm is the per-channel affine map ``BN(z) = a z + c`` with
``a = γ / sqrt(running_var + eps)`` and ``c = β - a · running_mean``; two exact folds exist:

- **preceding** (``conv/linear -> BN``, the ResNet pattern): ``W' = diag(a) W``,
  ``b' = a b + c``;
- **following** (``... -> BN -> [flatten] -> conv/linear``, used when a nonlinearity or a
  pooling sits between BN and the previous layer, as in MiniAlexNet's ``act - pool - bn``):
  ``W' = W diag(a)`` (input channels scaled) and ``b' = b + W c``. For a convolution with
  zero padding ``W c`` is not constant near the border (the padded zeros are not shifted),
  so the exact folded bias is a per-position *bias map* ``conv(c·1) + b``; it is kept as
  such (see :class:`BiasMapConv`), so the folded network computes the same function.

The producer/consumer graph is read from forward hooks on one example batch (tensor
identity), and the result is checked: the folded copy must reproduce the original eval-mode
outputs on that batch, otherwise :class:`~deepscope.errors.ModelError` is raised. The user's
model is never modified (everything happens on a deep copy).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deepscope._params import eval_mode
from deepscope.errors import ModelError, ShapeError

__all__ = ["FoldedNet", "BiasMapConv", "fold_batchnorm", "layer_matrices"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LINEAR_LIKE = (nn.Linear, *_CONV)
_PASS = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


class BiasMapConv(nn.Module):
    """A convolution without bias plus a per-position bias map ``(C_out, *spatial_out)``."""

    def __init__(self, conv: nn.Module, bias_map: Tensor):
        super().__init__()
        self.conv = conv
        self.bias_map = nn.Parameter(bias_map.detach().clone(), requires_grad=False)

    @property
    def weight(self) -> Tensor:
        return self.conv.weight

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if out.shape[1:] != self.bias_map.shape:
            raise ShapeError(f"folded convolution was built for outputs of shape "
                             f"(N, {', '.join(map(str, self.bias_map.shape))}); got "
                             f"{tuple(out.shape)} (folding depends on the input size)")
        return out + self.bias_map


@dataclass
class FoldedNet:
    """The BatchNorm-free copy of a network and its folded layer weights.

    Attributes:
        model: deep copy in eval mode, every folded BatchNorm replaced by ``nn.Identity``;
            computes the same function as the original in eval mode.
        weights: ``module name -> folded weight`` for every Linear / Conv layer, in forward
            order (conv kernels keep their shape; see :func:`layer_matrices`).
        folds: ``(batchnorm name, layer name, "preceding" | "following")`` per fold.
        max_abs_error: largest output difference between folded and original on the check
            batch.
    """

    model: nn.Module
    weights: dict[str, Tensor]
    folds: list[tuple[str, str, str]] = field(default_factory=list)
    max_abs_error: float = 0.0


def layer_matrices(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each weight as a matrix: Linear ``(out, in)``, conv kernel reshaped ``(out, in·k…)``."""
    return {k: w.reshape(w.shape[0], -1) for k, w in weights.items()}


@dataclass
class _Call:
    name: str
    module: nn.Module
    inp: Tensor
    out: Tensor


def _trace(model: nn.Module, x: Tensor) -> tuple[list[_Call], Tensor]:
    calls: list[_Call] = []
    handles = []
    for name, m in model.named_modules():
        if len(list(m.children())) > 0 and not isinstance(m, BiasMapConv):
            continue

        def hook(mod, args, out, name=name):
            if args and isinstance(args[0], Tensor) and isinstance(out, Tensor) \
                    and out is not args[0]:
                calls.append(_Call(name, mod, args[0], out))
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, y


def _bn_affine(bn: nn.Module, name: str) -> tuple[Tensor, Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ModelError(f"BatchNorm {name!r} keeps no running statistics "
                         "(track_running_stats=False): expected eval-mode statistics to fold")
    var, mean = bn.running_var.detach(), bn.running_mean.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(var)
    a = gamma / torch.sqrt(var + bn.eps)
    return a, beta - a * mean


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def fold_batchnorm(model: nn.Module, example_input: Tensor, *, rtol: float | None = None
                   ) -> FoldedNet:
    """Fold every BatchNorm of ``model`` (eval mode) into a neighbouring Linear / Conv.

    Args:
        model: the network (not modified).
        example_input: a batch ``(N, *input_shape)`` on the model's device; it fixes the
            spatial sizes (bias maps) and is used to check the folded function.
        rtol: the check's tolerance, relative to the largest output magnitude (default
            1e-4; 1e-2 for float32 on CUDA, where convolutions may run in TF32, whose
            10-bit mantissa makes two equal functions differ by ~1e-3). A wrong fold
            changes outputs by O(1) relative amounts.

    Raises:
        ModelError: a BatchNorm without running statistics, one that is not adjacent to a
            Linear / Conv (through Flatten / Identity / Dropout), a layer used twice, or a
            folded network whose outputs differ from the original.
    """
    if rtol is None:
        lowp = example_input.is_cuda and example_input.dtype != torch.float64
        rtol = 1e-2 if lowp else 1e-4
    net = copy.deepcopy(model)
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    with eval_mode(model), torch.no_grad():
        reference = model(example_input)
    calls, _ = _trace(net, example_input)
    producer = {id(c.out): c for c in calls}
    consumers: dict[int, list[_Call]] = {}
    seen: dict[str, int] = {}
    for c in calls:
        consumers.setdefault(id(c.inp), []).append(c)
        seen[c.name] = seen.get(c.name, 0) + 1
    for name, n in seen.items():
        m = net.get_submodule(name)
        if n > 1 and isinstance(m, (*_LINEAR_LIKE, *_BN)):
            raise ModelError(f"module {name!r} ({type(m).__name__}) is called {n} times in "
                             "one forward pass: expected each layer used once to fold BatchNorm")

    # per layer: current weight W and bias B ((C_out,) or a map (C_out, *spatial_out))
    state: dict[str, list[Tensor]] = {}
    out_shape: dict[str, tuple[int, ...]] = {}
    for c in calls:
        if isinstance(c.module, _LINEAR_LIKE):
            w = c.module.weight.detach().clone()
            b = c.module.bias.detach().clone() if c.module.bias is not None \
                else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
            state[c.name] = [w, b]
            out_shape[c.name] = tuple(c.out.shape[1:])
    following, preceding = [], []
    for c in calls:
        if not isinstance(c.module, _BN):
            continue
        a, shift = _bn_affine(c.module, c.name)
        prod = producer.get(id(c.inp))
        if prod is not None and isinstance(prod.module, _LINEAR_LIKE) \
                and len(consumers.get(id(prod.out), [])) == 1:
            preceding.append((c.name, prod.name, a, shift))
            continue
        # walk forward through pass-through modules to a single Linear / Conv consumer
        t, spatial = c.out, tuple(c.out.shape[2:])
        flattened = False
        target = None
        while True:
            nxt = consumers.get(id(t), [])
            if len(nxt) != 1:
                break
            d = nxt[0]
            if isinstance(d.module, _PASS):
                if isinstance(d.module, nn.Flatten):
                    if d.out.dim() != 2 or d.out.shape[1] != t[0].numel():
                        break
                    flattened = True
                t = d.out
                continue
            if isinstance(d.module, _LINEAR_LIKE):
                target = d
            break
        if target is None:
            raise ModelError(f"cannot fold BatchNorm {c.name!r}: expected a Linear/Conv layer "
                             "right before it or right after it (through Flatten/Dropout), "
                             "found neither")
        if isinstance(target.module, _CONV) and (flattened or target.module.groups != 1):
            raise ModelError(f"cannot fold BatchNorm {c.name!r} into grouped or flattened "
                             f"convolution {target.name!r}")
        following.append((c.name, target, a, shift, spatial, flattened))

    folds = []
    for bn_name, tgt, a, shift, spatial, flattened in following:
        w, b = state[tgt.name]
        mod = tgt.module
        if isinstance(mod, nn.Linear):
            rep = 1
            for s in spatial:
                rep *= s
            a_in = a.repeat_interleave(rep) if flattened else a
            c_in = shift.repeat_interleave(rep) if flattened else shift
            if a_in.numel() != w.shape[1]:
                raise ModelError(f"cannot fold BatchNorm {bn_name!r} into {tgt.name!r}: "
                                 f"{a_in.numel()} features for {w.shape[1]} inputs")
            b = b + w @ c_in
            w = w * a_in[None, :]
        else:
            shape = (1, a.numel()) + tuple(tgt.inp.shape[2:])
            const = shift.reshape(1, -1, *([1] * (len(shape) - 2))).expand(shape)
            tmp = copy.deepcopy(mod)
            tmp.weight = nn.Parameter(w.clone(), requires_grad=False)
            tmp.bias = None
            with torch.no_grad():
                shift_map = tmp(const.contiguous())[0]
            bmap = b.reshape(-1, *([1] * (shift_map.dim() - 1))) if b.dim() == 1 else b
            b = bmap + shift_map
            w = w * a.reshape(1, -1, *([1] * (w.dim() - 2)))
        state[tgt.name] = [w, b]
        folds.append((bn_name, tgt.name, "following"))
    for bn_name, layer, a, shift in preceding:
        w, b = state[layer]
        w = w * a.reshape(-1, *([1] * (w.dim() - 1)))
        b = (a.reshape(-1, *([1] * (b.dim() - 1))) * b
             + shift.reshape(-1, *([1] * (b.dim() - 1))))
        state[layer] = [w, b]
        folds.append((bn_name, layer, "preceding"))

    bn_names = {f[0] for f in folds}
    touched = {f[1] for f in folds}
    for name in bn_names:
        _set_module(net, name, nn.Identity())
    weights: dict[str, Tensor] = {}
    for c in calls:
        if c.name not in state:
            continue
        w, b = state[c.name]
        weights[c.name] = w
        if c.name not in touched:
            continue
        mod = c.module
        if b.dim() > 1:
            flat = b.reshape(b.shape[0], -1)
            if torch.allclose(flat, flat[:, :1].expand_as(flat), rtol=0, atol=0):
                b = flat[:, 0].clone()
        mod.weight = nn.Parameter(w, requires_grad=False)
        if b.dim() == 1:
            mod.bias = nn.Parameter(b, requires_grad=False)
        else:
            mod.bias = None
            _set_module(net, c.name, BiasMapConv(mod, b))

    with torch.no_grad():
        folded_out = net(example_input)
    err = float((folded_out - reference).abs().max()) if reference.numel() else 0.0
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    if not err <= rtol * max(scale, 1.0):
        raise ModelError(f"BatchNorm folding changed the network's outputs by {err:.3g} "
                         f"(scale {scale:.3g}): expected an exact fold; the model's forward "
                         "probably reuses a BatchNorm's input or output functionally")
    return FoldedNet(model=net, weights=weights, folds=folds, max_abs_error=err)
