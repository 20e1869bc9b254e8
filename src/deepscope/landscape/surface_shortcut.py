"""First-layer shortcut of :func:`deepscope.landscape.surface.surface` (``first_layer``).

When the first parameterized layer is a Linear or convolution applied to the raw input (after
parameter-free reshapes), its output at ``theta + a d1 + b d2`` is ``Z_0 + a Z_1 + b Z_2``
exactly (the layer is linear in its weight and bias jointly), so its three products are
computed once per data batch instead of once per grid point (:func:`first_layer_plane`
puts a :class:`FirstLayerPlane` in its place on a copy of the model). The layer is found by
:func:`first_affine_layer`: two dry runs (the second at perturbed parameters) check that it is
called once per forward, owns its parameters, and gets an input that depends on no parameter.

It pays where the layer's fan-in is large (e.g. 784 or 3072 flattened pixels); with
``first_layer="auto"`` it is used from a fan-in of ``SHORTCUT_MIN_FAN_IN`` (256) on (reading
three precomputed outputs costs about as much as a 64-input product), and only while the
precomputed outputs fit in 512 MiB.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

__all__ = ["first_layer_plane", "first_affine_layer", "FirstLayerPlane",
           "SHORTCUT_MIN_FAN_IN", "FIRST_LAYER_MODES"]

_AFFINE_FIRST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PLANE_BUDGET = 512 * 2 ** 20  # bytes of precomputed first-layer outputs
#: ``first_layer="auto"`` uses the shortcut from this fan-in (multiply-adds per output entry)
#: on: below it, reading 1 + dims precomputed outputs costs about as much as the product
#: (measured on CPUs: a 64-input Linear and a 25-tap convolution got slower with it)
SHORTCUT_MIN_FAN_IN = 256
FIRST_LAYER_MODES = ("auto", True, False)


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    return int(module.in_channels // module.groups * math.prod(module.kernel_size))


class _Captured(Exception):
    pass


def first_affine_layer(net: nn.Module, x: Tensor, base: dict[str, Tensor]) -> str | None:
    """Name of the first parameterized module run by ``net`` when it is a Linear / Conv layer,
    called once per forward, with parameters of its own (not tied elsewhere), on an input that
    does not depend on any parameter (checked by a second dry run at perturbed parameters)."""
    owners: dict[int, list[str]] = {}
    for mname, m in net.named_modules():
        for _, prm in m.named_parameters(recurse=False):
            owners.setdefault(id(prm), []).append(mname)
    calls: list[tuple[str, Tensor]] = []

    def pre(name):
        def hook(_m, args):
            calls.append((name, args[0] if args and isinstance(args[0], Tensor) else None))
        return hook

    handles = [m.register_forward_pre_hook(pre(n)) for n, m in net.named_modules()
               if any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            net(x)
            first_run = list(calls)
            calls.clear()
            g = torch.Generator().manual_seed(12345)
            moved = {n: p + torch.randn(p.shape, generator=g).to(p.device, p.dtype)
                     for n, p in base.items()}
            torch.func.functional_call(net, moved, (x,), strict=False)
            second_run = list(calls)
    except Exception:  # noqa: BLE001 - any trouble: no shortcut, the plain path decides
        return None
    finally:
        for h in handles:
            h.remove()
    if not first_run or first_run[0][1] is None or not second_run:
        return None
    name, inp = first_run[0]
    module = net.get_submodule(name)
    if not isinstance(module, _AFFINE_FIRST) or sum(c[0] == name for c in first_run) != 1:
        return None
    if any(len(owners[id(p)]) != 1 for p in module.parameters(recurse=False)):
        return None
    if second_run[0][0] != name or second_run[0][1] is None or not torch.equal(
            second_run[0][1], inp):
        return None
    return name


class FirstLayerPlane(nn.Module):
    """Stands in for the first (affine) layer on a grid: for parameters ``theta + sum_j c_j d_j``
    its output is ``Z_0 + sum_j c_j Z_j`` with ``Z_0 = f(x; theta_layer)`` and
    ``Z_j = f(x; d_j,layer)`` computed once per data batch (exact: Linear and convolution
    layers are linear in their weight and bias jointly). ``coef`` is the grid point."""

    def __init__(self, zs: list[list[Tensor]], dims: int, dtype, device):
        super().__init__()
        self.register_buffer("coef", torch.zeros(dims, dtype=dtype, device=device))
        # per data batch: Z_0 and the directions' outputs as the rows of one (dims, n) matrix,
        # so a grid point's output is one product coef @ D (a chunk of points under vmap: one
        # matrix product) plus Z_0
        self.zs = [(z[0], torch.stack([t.reshape(-1) for t in z[1:]])) for z in zs]
        self.batch = 0

    def forward(self, inp: Tensor) -> Tensor:
        z0, d = self.zs[self.batch]
        if inp.shape[0] != z0.shape[0]:
            raise RuntimeError("first-layer plane: batch does not match the precomputed one")
        return z0 + (self.coef @ d).view(z0.shape)

def first_layer_plane(net: nn.Module, x: Tensor, base: dict[str, Tensor],
                      dirs: list[dict[str, Tensor]], batch_size: int, mode: bool | str
                      ) -> tuple[nn.Module, FirstLayerPlane, str] | None:
    """A copy of ``net`` whose first affine layer is replaced by a :class:`FirstLayerPlane`
    holding ``Z_0, Z_1, ...`` for every data batch of ``x`` (batches of ``batch_size``), with
    the plane and the layer's name; None where the shortcut does not apply (no such layer,
    fan-in below ``SHORTCUT_MIN_FAN_IN`` with ``mode="auto"``, over the memory budget)."""
    name = first_affine_layer(net, x[:2], base)
    if name is None:
        return None
    mod = net.get_submodule(name)
    if mode == "auto" and _fan_in(mod) < SHORTCUT_MIN_FAN_IN:
        return None
    with torch.no_grad():
        out1 = mod(_first_input(net, mod, x[:1]))
    batches = math.ceil(x.shape[0] / batch_size)
    need = (1 + len(dirs)) * out1.numel() * x.shape[0] * out1.element_size()
    if need > _PLANE_BUDGET or batches < 1:
        return None
    zs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            inp = _first_input(net, mod, x[i:i + batch_size])
            z = [mod(inp)]
            for d in dirs:
                own = {n: d[f"{name}.{n}"] for n, _ in mod.named_parameters()}
                z.append(torch.func.functional_call(mod, own, (inp,)))
            zs.append(z)
    fast = copy.deepcopy(net)
    parent_name, _, child = name.rpartition(".")
    parent = fast.get_submodule(parent_name) if parent_name else fast
    plane = FirstLayerPlane(zs, len(dirs), out1.dtype, out1.device)
    setattr(parent, child, plane)
    return fast, plane, name


def _first_input(net: nn.Module, mod: nn.Module, xb: Tensor) -> Tensor:
    """The input ``mod`` receives when ``net`` runs on ``xb`` (the forward stops there)."""
    got = []

    def hook(_m, args):
        got.append(args[0])
        raise _Captured

    h = mod.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            net(xb)
    except _Captured:
        pass
    finally:
        h.remove()
    return got[0]
