"""Small models and dense float64 references (torch.func.hessian on the flat loss)."""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from deepscope._params import flatten, unflatten


def small_mlp(seed: int = 0, batchnorm: bool = False, dropout: float = 0.0) -> nn.Module:
    """6 -> 12 -> 8 -> 3 tanh MLP: 215 parameters (+ 24 with BatchNorm)."""
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 12), nn.Tanh()]
    if batchnorm:
        layers.append(nn.BatchNorm1d(12))
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def classification_data(n: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def dense_hessian(model: nn.Module, x, y, loss_fn=F.cross_entropy, names=None):
    """The float64 Hessian of the mean loss w.r.t. the (named) parameters, eval mode."""
    m = copy.deepcopy(model).double().eval()
    params = {k: v.detach() for k, v in m.named_parameters()}
    sub = {k: params[k] for k in (names or params)}
    fixed = {k: v for k, v in params.items() if k not in sub}
    fixed.update({k: v.detach() for k, v in m.named_buffers()})
    flat, layout = flatten(sub)
    xx = x.double()
    yy = y.double() if y.is_floating_point() else y

    def f(vec):
        out = torch.func.functional_call(m, {**fixed, **unflatten(vec, layout)}, (xx,))
        return loss_fn(out, yy)

    return torch.func.hessian(f)(flat)


def dense_ggn(model: nn.Module, x, y, loss_fn=F.cross_entropy):
    """Jᵀ H_out J densely: J the Jacobian of all outputs, H_out the loss Hessian in outputs."""
    m = copy.deepcopy(model).double().eval()
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = {k: v.detach() for k, v in m.named_buffers()}
    flat, layout = flatten(params)
    xx = x.double()

    def outputs(vec):
        return torch.func.functional_call(m, {**buffers, **unflatten(vec, layout)}, (xx,))

    out = outputs(flat)
    J = torch.func.jacrev(lambda v: outputs(v).reshape(-1))(flat)  # (n*C, P)
    H_out = torch.func.hessian(lambda o: loss_fn(o.reshape(out.shape), y))(out.reshape(-1))
    return J.T @ H_out @ J
