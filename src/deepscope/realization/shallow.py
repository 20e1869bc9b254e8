"""Shallow ReLU networks as explicit parameter arrays: f(x) = Σ_k a_k ReLU(w_k·x + b_k) + c.

This is the setting of Berner, Elbrächter, Grohs et al., "How degenerate is the
parametrization of neural networks with the ReLU activation function?" (NeurIPS 2019): a
network with one hidden ReLU layer of ``n`` neurons, inputs in R^d and outputs in R^m. Neuron
k has the inner weights ``w_k ∈ R^d`` (row k of ``W``), the bias ``b_k`` and the outer weight
vector ``a_k ∈ R^m`` (column k of ``A``); ``c ∈ R^m`` is the output bias.

:func:`extract_shallow` reads these from

- a deepscope MLP (:class:`deepscope.nets.mlp.MLP`) with exactly one hidden layer and ReLU,
- an ``nn.Sequential`` of ``[Flatten], Linear, [BatchNorm1d], ReLU, [Dropout], Linear``,

in float64. An eval-mode ``BatchNorm1d`` is affine and is folded into the first linear map
(w_k ← γ_k w_k / sqrt(var_k + eps), b_k ← γ_k (b_k − mean_k) / sqrt(var_k + eps) + β_k);
dropout is the identity in eval mode. These are the functions a probe evaluates (eval mode).
The extracted function is checked against the module's own forward pass on random inputs,
so a subclass with a custom ``forward`` is refused instead of misread. The module is never
changed: its parameters are copied, and train/eval flags are restored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepscope._params import eval_mode
from deepscope.errors import ConfigError, ModelError, ShapeError

__all__ = ["ShallowReLU", "extract_shallow", "as_shallow"]

_EXPECTED = ("a shallow ReLU network: a deepscope MLP with one hidden ReLU layer, or an "
             "nn.Sequential([Flatten], Linear, [BatchNorm1d], ReLU, [Dropout], Linear)")


@dataclass(frozen=True)
class ShallowReLU:
    """f(x) = A ReLU(W x + b) + c, all float64 on one device.

    Attributes:
        W: inner weights, shape (n, d) (row k is w_k).
        b: inner biases, shape (n,).
        A: outer weights, shape (m, n) (column k is a_k).
        c: output bias, shape (m,).
        input_shape: the input shape of the original module (flattened to d entries).
    """

    W: Tensor
    b: Tensor
    A: Tensor
    c: Tensor
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        W, b, A, c = self.W, self.b, self.A, self.c
        if W.dim() != 2 or b.dim() != 1 or A.dim() != 2 or c.dim() != 1:
            raise ShapeError(f"expected W (n, d), b (n,), A (m, n), c (m,); got shapes "
                             f"{tuple(W.shape)}, {tuple(b.shape)}, {tuple(A.shape)}, "
                             f"{tuple(c.shape)}")
        n = W.shape[0]
        if b.shape[0] != n or A.shape[1] != n or c.shape[0] != A.shape[0]:
            raise ShapeError(f"inconsistent shallow network: W {tuple(W.shape)}, b "
                             f"{tuple(b.shape)}, A {tuple(A.shape)}, c {tuple(c.shape)}")
        bad = [k for k, t in (("W", W), ("b", b), ("A", A), ("c", c))
               if not bool(torch.isfinite(t).all())]
        if bad:  # the Hungarian matching and the distances are undefined (scipy ValueError)
            raise ModelError(f"shallow network with non-finite (NaN/inf) parameters in "
                             f"{', '.join(bad)}: expected finite weights")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, W, b, A, c=None, *, device=None,
                    input_shape: tuple[int, ...] | None = None) -> "ShallowReLU":
        """Build from arrays/tensors (any float type; stored as float64). ``A`` may be a
        vector (one output). ``c`` defaults to zeros."""
        def t(x):
            return torch.as_tensor(x, dtype=torch.float64, device=device).clone()
        W, b, A = t(W), t(b), t(A)
        if A.dim() == 1:
            A = A[None, :]
        c = torch.zeros(A.shape[0], dtype=torch.float64, device=W.device) if c is None \
            else t(c).reshape(-1)
        return cls(W, b.reshape(-1), A, c, input_shape)

    def replace(self, **changes) -> "ShallowReLU":
        """A copy with some of W, b, A, c replaced (converted to float64 on this device)."""
        kw = {"W": self.W, "b": self.b, "A": self.A, "c": self.c}
        for k, v in changes.items():
            if k not in kw:
                raise ConfigError(f"unknown field {k!r}: expected W, b, A or c")
            kw[k] = torch.as_tensor(v, dtype=torch.float64, device=self.device)
        return ShallowReLU(**kw, input_shape=self.input_shape)

    # ------------------------------------------------------------------ properties
    @property
    def num_neurons(self) -> int:
        return int(self.W.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.W.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.A.shape[0])

    @property
    def device(self) -> torch.device:
        return self.W.device

    @property
    def inner(self) -> Tensor:
        """(w_k, b_k) stacked: shape (n, d + 1)."""
        return torch.cat([self.W, self.b[:, None]], dim=1)

    def parameter_vector(self) -> Tensor:
        """All parameters, flat: W (row-major), b, A (row-major), c."""
        return torch.cat([self.W.reshape(-1), self.b, self.A.reshape(-1), self.c])

    # ------------------------------------------------------------------ evaluation
    def __call__(self, x: Tensor) -> Tensor:
        """f(x) for a batch ``x`` of shape (N, d) (or (N, *input_shape)); returns (N, m)."""
        x = self._flat(x)
        return torch.relu(x @ self.W.T + self.b) @ self.A.T + self.c

    def _flat(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        if x.dim() == 1:
            x = x[None, :]
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.input_dim:
            raise ShapeError(f"expected inputs with {self.input_dim} features, got shape "
                             f"{tuple(x.shape)}")
        return x

    def value_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """f(x) (N, m) and its Jacobian ∂f/∂x (N, m, d) by autograd.

        f is piecewise linear, so the Jacobian is exact away from the kinks
        {w_k·x + b_k = 0} (at a kink autograd uses ReLU'(0) = 0)."""
        x = self._flat(x).detach().requires_grad_(True)
        with torch.enable_grad():
            y = self(x)
            jac = torch.stack([torch.autograd.grad(y[:, j].sum(), x, retain_graph=True)[0]
                               for j in range(self.output_dim)], dim=1)
        return y.detach(), jac.detach()

    def to(self, device) -> "ShallowReLU":
        """The same net on another device."""
        return ShallowReLU(self.W.to(device), self.b.to(device), self.A.to(device),
                           self.c.to(device), self.input_shape)

    def to_module(self) -> nn.Sequential:
        """An ``nn.Sequential(Linear, ReLU, Linear)`` in float64 computing this function."""
        first = nn.Linear(self.input_dim, self.num_neurons).to(torch.float64)
        last = nn.Linear(self.num_neurons, self.output_dim).to(torch.float64)
        with torch.no_grad():
            first.weight.copy_(self.W)
            first.bias.copy_(self.b)
            last.weight.copy_(self.A)
            last.bias.copy_(self.c)
        return nn.Sequential(first, nn.ReLU(), last).to(self.device)


# ---------------------------------------------------------------------- extraction

def _layers(model: nn.Module) -> list[nn.Module]:
    """The children that compute something (Flatten / Identity / Dropout are skipped)."""
    if not isinstance(model, nn.Sequential):
        raise ModelError(f"expected {_EXPECTED}; got a {type(model).__name__}")
    out = []
    for child in model.children():
        if isinstance(child, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue
        out.append(child)
    return out


def _describe(layers: list[nn.Module]) -> str:
    return ", ".join(type(m).__name__ for m in layers) or "no layers"


def extract_shallow(model: nn.Module, *, check: bool = True) -> ShallowReLU:
    """Read f(x) = Σ_k a_k ReLU(w_k·x + b_k) + c from a one-hidden-layer ReLU network.

    Args:
        model: see the module docstring for what is accepted (a :class:`ShallowReLU` is
            returned as is).
        check: compare the extracted function with ``model(x)`` (eval mode) on 16 random
            inputs; a relative mismatch above 1e-4 (float32 modules) raises ModelError.

    Raises:
        ModelError: anything else (deeper networks, other activations, convolutions ...),
            naming what was expected and what arrived.
    """
    if isinstance(model, ShallowReLU):
        return model
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected {_EXPECTED}; got {type(model).__name__}")
    layers = _layers(model)
    bn = None
    if len(layers) == 4 and isinstance(layers[1], nn.BatchNorm1d):
        bn = layers.pop(1)
    ok = (len(layers) == 3 and isinstance(layers[0], nn.Linear)
          and type(layers[1]) is nn.ReLU and isinstance(layers[2], nn.Linear))
    if not ok:
        raise ModelError(f"expected {_EXPECTED}; got a {type(model).__name__} of "
                         f"[{_describe(layers if bn is None else [layers[0], bn, *layers[1:]])}]")
    first, last = layers[0], layers[2]
    if last.in_features != first.out_features:
        raise ModelError(f"hidden widths do not match: first layer has {first.out_features} "
                         f"outputs, last layer takes {last.in_features}")
    with torch.no_grad():
        W = first.weight.detach().to(torch.float64).clone()
        b = (first.bias.detach().to(torch.float64).clone() if first.bias is not None
             else torch.zeros(W.shape[0], dtype=torch.float64, device=W.device))
        if bn is not None:
            if bn.num_features != W.shape[0] or bn.running_mean is None:
                raise ModelError("expected a BatchNorm1d with running statistics over the "
                                 f"{W.shape[0]} hidden units")
            scale = 1.0 / torch.sqrt(bn.running_var.detach().to(torch.float64) + bn.eps)
            if bn.affine:
                scale = scale * bn.weight.detach().to(torch.float64)
            shift = -bn.running_mean.detach().to(torch.float64) * scale
            if bn.affine:
                shift = shift + bn.bias.detach().to(torch.float64)
            W = W * scale[:, None]
            b = b * scale + shift
        A = last.weight.detach().to(torch.float64).clone()
        c = (last.bias.detach().to(torch.float64).clone() if last.bias is not None
             else torch.zeros(A.shape[0], dtype=torch.float64, device=A.device))
    shape = getattr(model, "input_shape", None)
    net = ShallowReLU(W, b, A, c, tuple(shape) if shape is not None else None)
    if check:
        _check_matches(model, net)
    return net


def _check_matches(model: nn.Module, net: ShallowReLU) -> None:
    gen = torch.Generator().manual_seed(12345)
    shape = net.input_shape or (net.input_dim,)
    if math.prod(shape) != net.input_dim:
        raise ModelError(f"input_shape {shape} does not have {net.input_dim} entries")
    x = torch.randn(16, *shape, generator=gen, dtype=torch.float64)
    p = next(model.parameters())
    with eval_mode(model), torch.no_grad():
        try:
            got = model(x.to(device=p.device, dtype=p.dtype)).to(torch.float64)
        except Exception as exc:  # noqa: BLE001 - a custom forward we cannot read
            raise ModelError(f"expected {_EXPECTED}; calling it on inputs of shape "
                             f"{tuple(x.shape)} failed ({exc})") from None
    want = net(x.to(net.device))
    if got.shape != want.shape:
        raise ModelError(f"expected {_EXPECTED}; its forward returned shape "
                         f"{tuple(got.shape)}, the layers give {tuple(want.shape)}")
    tol = 1e-4 if p.dtype != torch.float64 else 1e-9
    err = float((got.to(want.device) - want).abs().max())
    scale = float(want.abs().max()) + 1.0
    if err > tol * scale:
        raise ModelError(f"expected {_EXPECTED}; its forward differs from Linear-ReLU-Linear "
                         f"by {err:.3g} (a custom forward?)")


def as_shallow(x) -> ShallowReLU:
    """``x`` if it is a :class:`ShallowReLU`, else :func:`extract_shallow` of it."""
    return x if isinstance(x, ShallowReLU) else extract_shallow(x)
