"""Parameters as ``dict[str, Tensor]``: snapshots, functional calls, flatten/unflatten.

Probes never touch the user's module state: they take a snapshot of its parameters and
buffers, evaluate through :func:`torch.func.functional_call`, and restore train/eval mode.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "params_of",
    "buffers_of",
    "functional_forward",
    "flatten",
    "unflatten",
    "state_fingerprint",
    "eval_mode",
    "check_input_dtype",
]

Params = dict[str, Tensor]


def params_of(model: nn.Module, *, clone: bool = True) -> Params:
    """Named parameters as detached tensors (cloned by default, so edits never reach the model)."""
    out = {}
    for name, p in model.named_parameters():
        t = p.detach()
        out[name] = t.clone() if clone else t
    return out


def buffers_of(model: nn.Module, *, clone: bool = True) -> Params:
    """Named buffers (BatchNorm running stats, ...) as detached tensors."""
    out = {}
    for name, b in model.named_buffers():
        t = b.detach()
        out[name] = t.clone() if clone else t
    return out


def functional_forward(model: nn.Module, params: Mapping[str, Tensor], *args,
                       buffers: Mapping[str, Tensor] | None = None, **kwargs):
    """Call ``model`` with ``params`` (and ``buffers``) substituted, without mutating it."""
    merged = dict(params)
    if buffers is not None:
        merged.update(buffers)
    return torch.func.functional_call(model, merged, args, kwargs, strict=False)


def flatten(params: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[str, torch.Size]]]:
    """Concatenate tensors into one vector; return it and the layout for :func:`unflatten`."""
    layout = [(k, v.shape) for k, v in params.items()]
    if not layout:
        return torch.empty(0), layout
    return torch.cat([v.reshape(-1) for v in params.values()]), layout


def unflatten(vec: Tensor, layout: list[tuple[str, torch.Size]]) -> Params:
    """Inverse of :func:`flatten` (views into ``vec``)."""
    out, i = {}, 0
    for name, shape in layout:
        n = 1
        for s in shape:
            n *= s
        out[name] = vec[i:i + n].view(shape)
        i += n
    if i != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, layout expects {i}")
    return out


def state_fingerprint(model: nn.Module) -> str:
    """A hash of the state_dict bytes, the training flags and requires_grad flags.

    Used by the contract tests: every probe must leave this unchanged.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=True).items():
        h.update(name.encode())
        d = t.detach().cpu().contiguous()
        h.update(str(d.dtype).encode())
        h.update(d.view(-1).view(torch.uint8).numpy().tobytes() if d.numel() else b"")
        h.update(str(getattr(t, "requires_grad", False)).encode())
    for name, m in model.named_modules():
        h.update(f"{name}:{m.training}".encode())
    return h.hexdigest()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for m, f in flags.items():
            m.training = f


def check_input_dtype(model: nn.Module, x: Tensor) -> None:
    """Integer inputs (e.g. uint8 images) to a model that needs floating ones: one clear
    ShapeError instead of torch's dtype error deep in a probe. Runs the model on two samples
    (eval mode, no grad) only when ``x`` is not floating; a model that takes integers
    (token ids into an Embedding) passes."""
    if x.is_floating_point() or x.shape[0] == 0:
        return
    from deepscope.errors import ShapeError
    dev = next((p.device for p in model.parameters()), x.device)
    try:
        with torch.no_grad(), eval_mode(model):
            model(x[:2].to(dev))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ShapeError(f"the model cannot take inputs of dtype {x.dtype} ({first}); "
                         f"expected floating inputs: cast them first, e.g. x.float() / 255 "
                         f"for 8-bit images") from None
