"""``deepscope.ntk``: the empirical neural tangent kernel Θ = J Jᵀ on a set of probe inputs.

For a network f(x; θ) with k outputs and the Jacobian J = ∂f(x_i)/∂θ over *all* parameters,

    Θ_{(i,c),(j,c')} = Σ_p ∂f_c(x_i)/∂θ_p · ∂f_c'(x_j)/∂θ_p        (Jacot, Gabriel & Hongler,
                                                                   NeurIPS 2018)

is the empirical NTK; gradient flow on a squared loss moves the outputs by du/dt = −Θ (u − y)
(Du, Zhai, Poczos & Singh, ICLR 2019, "Gradient descent provably optimizes over-parameterized
neural networks": their Gram matrix H(t) is this Θ for the two-layer net).

``outputs`` picks the kernel returned:

- ``"all"``: the full (n·k)x(n·k) kernel, rows/columns in sample-major order (index i·k + c);
- ``"sum"``: the n x n trace over outputs, Θ_ij = Σ_c Θ_{(i,c),(j,c)} (a sum, not a mean: for
  k = 1 it is the kernel itself; divide by k for the per-output average);
- an int c: the n x n kernel of logit c alone.

Two ways to compute it (``method``), both on a snapshot of the parameters (the model is never
mutated) with every submodule in eval mode (BatchNorm uses running statistics; Dropout off):

- ``"jacobian"`` (Jacobian contraction): per-sample Jacobians ``vmap(jacrev(f))`` over
  :func:`torch.func.functional_call`, a block of ``batch_size`` samples at a time, then Θ_IJ =
  J_I J_Jᵀ (for ``"sum"`` the (k, P) Jacobian of a sample is flattened, which contracts the
  trace over outputs in the same matmul). When the whole Jacobian (n·k·P numbers) fits in
  ``max_memory_mb`` every block is computed once; otherwise blocks are recomputed per block
  pair, so memory stays at two blocks. Cost ~ n·k backward passes + n²k²P (or n²kP) flops.
  Models that ``vmap`` cannot batch (``nn.LSTM``'s in-place kernels) fall back to one
  reverse pass per (sample, output) on the block's batched forward (summary
  ``vectorized=False``; exact for models whose samples do not interact, as in eval mode).
- ``"ntk-vp"`` (NTK-vector products; the "implicit" method of Novak, Sohl-Dickstein &
  Schoenholz, ICML 2022): for a chunk of columns (j, c) the parameter gradients g = ∇θ f_c(x_j)
  (vjps), then Θ[:, (j,c)] = J g by forward-mode jvps over the row blocks. Memory ~ chunk x P
  plus one block's activations; never a Jacobian block. Cost ~ n·k vjps + n·k jvps over all n
  samples (about n times the forward work of the Jacobian method).
- ``"auto"`` (default): ``"jacobian"`` whenever one sample's Jacobian pair (2·k·P numbers) fits
  in ``max_memory_mb`` (then the block size is lowered to fit), else ``"ntk-vp"`` (huge P·k,
  e.g. language models with a large vocabulary as k).

Eigenvalues come from ``torch.linalg.eigvalsh`` of the symmetrized kernel in float64.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._device import resolve_device
from deepscope._params import buffers_of, eval_mode, params_of
from deepscope._progress import progress_bar
from deepscope.dynamics.result import NTK_COLUMNS, NTKResult
from deepscope.errors import ConfigError, ModelError, ShapeError, unknown_name
from deepscope._precision import ieee_float32

__all__ = ["ntk", "probe_inputs", "ntk_probe", "METHODS"]

METHODS = ("auto", "jacobian", "ntk-vp")
DEFAULT_MEMORY_MB = 512


def probe_inputs(probe_data, *, max_samples: int | None = None, seed: int = 0,
                 split: str = "train") -> Tensor:
    """Inputs of a probe set: a tensor/array of inputs, an ``(x, y)`` pair, or a Dataset split.

    ``max_samples`` keeps a random subset of that size (drawn from ``seed``, in data order).
    """
    from deepscope.data.dataset import Dataset
    if isinstance(probe_data, Dataset):
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
        x = probe_data.split(split)[0]
    elif isinstance(probe_data, (tuple, list)) and len(probe_data) == 2:
        x = torch.as_tensor(probe_data[0])
    elif isinstance(probe_data, (Tensor, np.ndarray)):
        x = torch.as_tensor(probe_data)
    else:
        raise ConfigError(f"probe_data must be a tensor of inputs, an (x, y) pair or a "
                          f"deepscope Dataset, got {type(probe_data).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ShapeError(f"expected probe inputs of shape (n, ...) with n >= 1, got "
                         f"{tuple(x.shape)}")
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigError(f"max_samples must be an integer >= 1 or None, got "
                              f"{max_samples!r}")
        if max_samples < x.shape[0]:
            g = torch.Generator().manual_seed(int(seed))
            idx = torch.randperm(x.shape[0], generator=g)[:max_samples].sort().values
            x = x[idx]
    return x


def _resolve_outputs(outputs, k: int) -> tuple[str, int | None]:
    if isinstance(outputs, str):
        if outputs not in ("sum", "all"):
            raise unknown_name("outputs", outputs, ("sum", "all", "<int logit index>"))
        return outputs, None
    if isinstance(outputs, bool) or not isinstance(outputs, (int, np.integer)):
        raise ConfigError(f"outputs must be 'sum', 'all' or an int logit index, got "
                          f"{outputs!r}")
    c = int(outputs)
    if not -k <= c < k:
        raise ConfigError(f"outputs={c} is out of range: the model has {k} outputs "
                          f"(expected 0..{k - 1})")
    return "index", c % k


class _Kernel:
    """The functional pieces: f_single(params, x) -> (k,), f_batch(params, xb) -> (b, k)."""

    def __init__(self, model: nn.Module, params: dict[str, Tensor], fixed: dict[str, Tensor],
                 index: int | None):
        self.model, self.params, self.fixed, self.index = model, params, fixed, index

    def f_batch(self, params: dict[str, Tensor], xb: Tensor) -> Tensor:
        merged = dict(self.fixed)
        merged.update(params)
        out = torch.func.functional_call(self.model, merged, (xb,), strict=False)
        if not isinstance(out, Tensor):
            raise ModelError(f"expected the model to return a tensor, got "
                             f"{type(out).__name__}")
        out = out.reshape(xb.shape[0], -1)
        if self.index is not None:
            out = out[:, self.index:self.index + 1]
        return out

    def f_single(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return self.f_batch(params, x.unsqueeze(0))[0]

    vectorized = True  # False once vmap failed: per-sample autograd loop from then on

    def jacobian(self, xb: Tensor) -> Tensor:
        """(b, k, P): per-sample Jacobians of a block (parameters in snapshot order)."""
        if self.vectorized:
            try:
                jac = torch.func.vmap(torch.func.jacrev(self.f_single), in_dims=(None, 0))(
                    self.params, xb)
            except RuntimeError:
                self.vectorized = False  # e.g. nn.LSTM: in-place ops vmap cannot batch
            else:
                b = xb.shape[0]
                return torch.cat([jac[name].reshape(b, jac[name].shape[1], -1)
                                  for name in self.params], dim=2)
        return self._jacobian_loop(xb)

    def _jacobian_loop(self, xb: Tensor) -> Tensor:
        """The same Jacobian by one reverse pass per (sample, output) (slow fallback)."""
        params = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
        leaves = list(params.values())
        # cuDNN's RNN kernels refuse to differentiate in eval mode: use the native ones here
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            out = self.f_batch(params, xb)
            rows = []
            for i in range(out.shape[0]):
                per = []
                for c in range(out.shape[1]):
                    grads = torch.autograd.grad(out[i, c], leaves, retain_graph=True,
                                                allow_unused=True)
                    per.append(torch.cat([(g if g is not None else torch.zeros_like(p))
                                          .reshape(-1) for g, p in zip(grads, leaves)]))
                rows.append(torch.stack(per))
        return torch.stack(rows).detach()

    def gradients(self, xs: Tensor, onehots: Tensor) -> dict[str, Tensor]:
        """Parameter gradients of f_c(x_j) for a chunk of columns (j, c) (vmapped vjps)."""
        def grad_col(x, e):
            _, vjp_fn = torch.func.vjp(lambda p: self.f_single(p, x), self.params)
            return vjp_fn(e)[0]
        return torch.func.vmap(grad_col)(xs, onehots)

    def jvps(self, tangents: dict[str, Tensor], xb: Tensor) -> Tensor:
        """(chunk, b, k): J_block · g for every tangent g of the chunk (vmapped jvps)."""
        def one(t):
            return torch.func.jvp(lambda p: self.f_batch(p, xb), (self.params,), (t,))[1]
        return torch.func.vmap(one)(tangents)


def _jacobian_kernel(ker: _Kernel, x: Tensor, mode: str, k: int, P: int, block: int,
                     budget: int, itemsize: int, tick: Callable[[], None]) -> Tensor:
    n = x.shape[0]
    rows = n * k if mode == "all" else n
    theta = torch.empty(rows, rows, dtype=x.dtype, device=x.device)
    starts = list(range(0, n, block))
    per = k if mode == "all" else 1

    def flat(j: Tensor) -> Tensor:  # (b, k, P) -> rows of the contraction
        return j.reshape(j.shape[0] * k, P) if mode == "all" else j.reshape(j.shape[0], k * P)

    if (n * k + 2 * block * k) * P * itemsize <= budget:  # all of J fits: each block once
        J = torch.empty(rows, (k if mode == "sum" else 1) * P, dtype=x.dtype, device=x.device)
        for s in starts:
            Js = flat(ker.jacobian(x[s:s + block]))
            J[s * per:s * per + Js.shape[0]] = Js
            del Js
            tick()
        return J @ J.T
    for a, sa in enumerate(starts):
        Ja = flat(ker.jacobian(x[sa:sa + block]))
        ra = slice(sa * per, (sa + Ja.shape[0] // per) * per)
        theta[ra, ra] = Ja @ Ja.T
        for sb in starts[a + 1:]:
            Jb = flat(ker.jacobian(x[sb:sb + block]))
            rb = slice(sb * per, (sb + Jb.shape[0] // per) * per)
            blk = Ja @ Jb.T
            theta[ra, rb] = blk
            theta[rb, ra] = blk.T
            del Jb
        tick()
    return theta


def _vp_kernel(ker: _Kernel, x: Tensor, mode: str, k: int, P: int, block: int, chunk: int,
               tick: Callable[[], None]) -> Tensor:
    n = x.shape[0]
    rows = n * k if mode == "all" else n
    theta = torch.zeros(rows, rows, dtype=x.dtype, device=x.device)
    cols = [(j, c) for j in range(n) for c in range(k)]
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    for s in range(0, len(cols), chunk):
        part = cols[s:s + chunk]
        js = torch.tensor([j for j, _ in part], device=x.device)
        cs = torch.tensor([c for _, c in part], device=x.device)
        g = ker.gradients(x[js], eye[cs])
        for r in range(0, n, block):
            out = ker.jvps(g, x[r:r + block])  # (chunk, b, k)
            b = out.shape[1]
            if mode == "all":
                col_idx = js * k + cs
                theta[r * k:(r + b) * k][:, col_idx] = out.reshape(len(part), b * k).T
            else:
                vals = out[torch.arange(len(part), device=x.device), :, cs]  # (chunk, b)
                theta[r:r + b].index_add_(1, js, vals.T)
        tick()
    return theta


@ieee_float32
def ntk(model: nn.Module, probe_data, *, outputs: str | int = "sum", batch_size: int = 64,
        method: str = "auto", device=None, dtype: torch.dtype | None = None,
        max_samples: int | None = None, seed: int = 0, max_memory_mb: float = DEFAULT_MEMORY_MB,
        progress: bool = False) -> NTKResult:
    """The empirical NTK Θ = J Jᵀ of ``model`` on probe inputs, with its spectrum.

    Args:
        model: an ``nn.Module`` (never mutated; evaluated in eval mode). Θ is taken over all
            its parameters (buffers such as BatchNorm statistics are constants).
        probe_data: inputs ``(n, ...)`` (tensor or array), an ``(x, y)`` pair, or a deepscope
            ``Dataset`` (its train split).
        outputs: ``"sum"`` (n x n trace over outputs), ``"all"`` ((n·k)x(n·k), sample-major)
            or an int logit index (n x n). See the module docstring.
        batch_size: samples per Jacobian / jvp block.
        method: ``"auto"``, ``"jacobian"`` or ``"ntk-vp"`` (module docstring: which when).
        device: where to compute (None: the model's device).
        dtype: float32 or float64 (None: the model's parameter dtype).
        max_samples, seed: a random subset of the probe inputs.
        max_memory_mb: memory budget for Jacobian blocks / gradient chunks.
        progress: a progress bar over blocks.

    Returns:
        :class:`~deepscope.dynamics.result.NTKResult`: ``gram`` (the kernel, CPU tensor),
        ``eigenvalues`` (descending), table one row per eigenvalue, summary with
        ``lambda_min``, ``lambda_max``, ``condition_number``, ``trace``, ``n``, ``num_params``.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method not in METHODS:
        raise unknown_name("ntk method", method, METHODS)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(max_memory_mb, (int, float)) and max_memory_mb > 0):
        raise ConfigError(f"max_memory_mb must be a positive number, got {max_memory_mb!r}")
    params = params_of(model)
    if not params:
        raise ModelError("expected a model with parameters, got one with none")
    first = next(iter(params.values()))
    if dtype is None:
        dtype = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    device = resolve_device(device, first.device)
    x = probe_inputs(probe_data, max_samples=max_samples, seed=seed)
    x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)

    def cast(t: Tensor) -> Tensor:
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

    params = {name: cast(t) for name, t in params.items()}
    fixed = {name: cast(t) for name, t in buffers_of(model).items()}
    P = sum(t.numel() for t in params.values())
    itemsize = torch.finfo(dtype).bits // 8
    budget = int(max_memory_mb * 2 ** 20)
    n = x.shape[0]

    t0 = time.perf_counter()
    with eval_mode(model):
        try:
            with torch.no_grad():
                k_all = _Kernel(model, params, fixed, None).f_batch(params, x[:1]).shape[1]
        except ShapeError:
            raise
        except Exception as e:  # noqa: BLE001 - report what the model could not do
            raise ModelError(f"the model cannot be evaluated on the probe inputs of shape "
                             f"{tuple(x.shape)}: {type(e).__name__}: {e}") from e
        mode, index = _resolve_outputs(outputs, k_all)
        k = 1 if mode == "index" else k_all
        ker = _Kernel(model, params, fixed, index)
        used = method
        if method == "auto":
            used = "jacobian" if 2 * k * P * itemsize <= budget else "ntk-vp"
        if used == "jacobian":
            block = max(1, min(batch_size, n, budget // max(1, 2 * k * P * itemsize)))
            total = -(-n // block)
        else:
            block = min(batch_size, n)
            chunk = max(1, min(n * k, budget // max(1, 4 * P * itemsize)))
            total = -(-(n * k) // chunk)
        with progress_bar(total=total, enabled=progress, desc=f"ntk ({used})",
                          unit="block") as bar:
            try:
                if used == "jacobian":
                    theta = _jacobian_kernel(ker, x, "all" if mode == "all" else "sum", k, P,
                                             block, budget, itemsize, lambda: bar.update(1))
                else:
                    theta = _vp_kernel(ker, x, "all" if mode == "all" else "sum", k, P,
                                       block, chunk, lambda: bar.update(1))
            except (ShapeError, ModelError):
                raise
            except RuntimeError as e:
                raise ModelError(f"torch.func could not differentiate this model per sample "
                                 f"(method {used!r}): {e}") from e
    theta = 0.5 * (theta + theta.T)
    if not bool(torch.isfinite(theta).all()):  # eigvalsh would fail with a LinAlgError
        bad = [k for k, v in params.items() if not bool(torch.isfinite(v).all())]
        why = (f"non-finite parameters in {', '.join(bad[:5])}" if bad
               else "non-finite outputs or gradients on the probe inputs")
        raise ModelError(f"the empirical NTK has NaN/inf entries ({why}): expected a model "
                         f"with finite weights and outputs")
    elapsed = time.perf_counter() - t0
    return _result(theta, n=n, k=k, k_all=k_all, P=P, mode=mode, index=index, used=used,
                   vectorized=ker.vectorized,
                   method=method, batch_size=batch_size, dtype=dtype, device=device,
                   elapsed=elapsed, max_samples=max_samples, seed=seed)


def _result(theta: Tensor, *, n, k, k_all, P, mode, index, used, vectorized, method,
            batch_size, dtype,
            device, elapsed, max_samples, seed) -> NTKResult:
    gram = theta.detach().cpu()
    evals = torch.linalg.eigvalsh(gram.double()).flip(0).numpy()
    trace = float(torch.diagonal(gram.double()).sum())
    lmin, lmax = float(evals[-1]), float(evals[0])
    table = pd.DataFrame({"index": np.arange(len(evals)), "eigenvalue": evals,
                          "fraction": evals / trace if trace > 0 else np.full(len(evals),
                                                                              math.nan)},
                         columns=list(NTK_COLUMNS))
    summary = {
        "n": int(n),
        "num_outputs": int(k_all),
        "outputs": mode if mode != "index" else int(index),
        "kernel_size": int(gram.shape[0]),
        "num_params": int(P),
        "lambda_min": lmin,
        "lambda_max": lmax,
        "condition_number": lmax / lmin if lmin > 0 else math.inf,
        "trace": trace,
        "frobenius_norm": float(gram.double().norm()),
        "method": used,
        "vectorized": bool(vectorized),
        "time_s": elapsed,
    }
    settings = {"outputs": mode if mode != "index" else int(index), "method": method,
                "batch_size": batch_size, "dtype": str(dtype).replace("torch.", ""),
                "device": str(device), "max_samples": max_samples, "seed": seed}
    return NTKResult(kind="ntk", table=table, summary=summary, settings=settings, gram=gram,
                     eigenvalues=evals)


def ntk_probe(checkpoint, *, probe_size: int = 64, seed: int = 0, split: str = "train",
              **options) -> NTKResult:
    """Zoo probe (for :func:`deepscope.sweep.probes.register_probe`): the empirical NTK of a
    checkpoint on ``probe_size`` random points of its own dataset (``progress`` forced off)."""
    from deepscope.train.checkpoint import load_checkpoint
    options["progress"] = False
    ckpt = load_checkpoint(checkpoint)
    x = probe_inputs(ckpt.dataset(), max_samples=probe_size, seed=seed, split=split)
    res = ntk(ckpt.model, x, **options)
    res.settings.update(probe_size=probe_size, split=split, seed=seed)
    return res
