"""Start vectors for Lanczos on the full Hessian: ``hessian(..., start="output-layer")``.

For a trained classifier the top Hessian eigenvectors concentrate in the output layer (the
outliers of the spectrum come from the class structure of the output layer's Gauss-Newton
term: Sagun et al. 2017, Papyan 2019/2020). On the 784-512-512-10 MLP of
``benchmarks/hessian_vs_pyhessian.py`` trained 300 or 3000 steps, 92% of the top
eigenvector's squared norm lies in the output layer, and the top eigenvector of the output
layer's diagonal block H_LL has squared overlap 0.92 with it. H_LL's products are cheap (the
backward pass stops at the output layer), so its top eigenvector, found by Lanczos in a few
such products, is embedded in the full parameter vector (zero elsewhere), mixed with a
Gaussian vector of relative norm ``mix`` (so no eigenvector is exactly orthogonal to the
start) and handed to Lanczos on the full Hessian, which then needs 2-3 full products instead
of 4-6.

H_LL's eigenvalues are lower bounds on the full Hessian's (Cauchy interlacing); they go to
Lanczos's ``rtol`` estimate, which after two steps from a good start would otherwise measure
the gap to a second Ritz value far below λ2 and stop early (on a trained 10-32-32-4 MLP at
error 1.7e-3 for rtol 1e-3; with the bounds one step later at 1.8e-4).

The assumption can fail: at initialization the same MLP's top eigenvector has squared overlap
0.004 with H_LL's (13 full products to rtol 1e-3 against 15 from a random start: little
help), and an eigenvector that lives in earlier layers with a slightly larger eigenvalue is
found late (a Krylov method sees first what its start vector sees): with a trained MLP's
inputs scaled 1.5x up and its first-layer weights 1.5x down (same function, more curvature in
the first layer) the error was 1.2e-3 for rtol 1e-3; at 3x and 30x the random part of the
start, amplified by the larger eigenvalue, brought it in (errors 2.5e-5, 6.6e-5). Hence an
option, not the default.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepscope._params import eval_mode
from deepscope.errors import ModelError

__all__ = ["output_layer", "output_layer_start", "START_MODES"]

START_MODES = ("random", "output-layer")


def output_layer(model: nn.Module, x1: Tensor) -> tuple[str, list[str]]:
    """The last module that runs in ``model``'s forward on ``x1`` and owns parameters: its
    name and its parameters' names (execution order, not registration order)."""
    order: list[str] = []
    owners = {name: [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
              for name, m in model.named_modules()}

    def hook(name):
        def run(_m, _args, _out):
            order.append(name)
        return run

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if owners[name]]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x1)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ModelError("start='output-layer': no module with parameters ran in the forward "
                         "pass; expected a model whose parameters belong to its modules")
    return order[-1], owners[order[-1]]


def output_layer_start(op, x: Tensor, y: Tensor, loss_fn, *, batch_size: int, seed: int,
                       k: int = 1, mix: float = 0.1, tol: float = 1e-3) -> tuple[Tensor, dict]:
    """A start vector for Lanczos on ``op`` (the full operator): the top eigenvector of the
    output layer's diagonal block plus ``mix`` times a unit Gaussian vector; and a dict with
    the layer, its parameters, the block products used and the block's ``k + 1`` largest
    Ritz values (``start_bounds``): lower bounds on the full Hessian's ``k + 1`` largest
    eigenvalues (Ritz values lie below the block's eigenvalues, which by Cauchy interlacing
    lie below the full matrix's), which keep Lanczos's ``rtol`` estimate honest after few
    steps."""
    from deepscope.curvature.operators import CurvatureOperator
    from deepscope.linalg.lanczos import random_unit_vector, top_eigenvalues

    # the model's own forward (on its own device and dtype; the operator may use others)
    ref = next(op.model.parameters())
    x2 = x[:2].to(ref.device)
    name, members = output_layer(op.model, x2.to(ref.dtype) if x2.is_floating_point() else x2)
    members = [m for m in members if m in op.names]
    if not members:
        raise ModelError(f"start='output-layer': the output layer {name!r} has no parameters "
                         f"among the operator's")
    block = CurvatureOperator(op.model, x, y, loss_fn, block=members, batch_size=batch_size,
                              dtype=op.dtype, device=op.device, callback=op.callback)
    eig = top_eigenvalues(block, block.dim, k=min(k + 1, block.dim), tol=tol, seed=seed,
                          dtype=op.dtype, device=op.device, return_vectors=True)
    u = eig.eigenvectors[:, 0]
    parts, off_b = {}, 0
    for pname, shape in block.layout:
        parts[pname] = u[off_b:off_b + shape.numel()]
        off_b += shape.numel()
    v0 = mix * random_unit_vector(op.dim, seed=seed + 7919, dtype=op.dtype, device=op.device)
    off = 0
    for pname, shape in op.layout:
        n = shape.numel()
        if pname in parts:
            v0[off:off + n] += parts[pname]
        off += n
    if not math.isfinite(float(v0.norm())):
        raise ModelError("start='output-layer': the output layer's block gave a non-finite "
                         "vector (is the loss finite?)")
    return v0, {"start_layer": name, "start_block": members,
                "start_hvps": int(block.num_matvecs),
                "start_bounds": [float(v) for v in eig.eigenvalues]}
