"""``deepscope.hessian``: top eigenvalues, trace and spectral density of the loss Hessian (or GGN).

The Hessian H = ∇²L(θ) of the full-data (or ``max_samples``) mean loss, θ the parameters
that require grad (frozen ones are held fixed, as in PyHessian), is used only through
Hessian-vector products (:mod:`deepscope.curvature.operators`; Pearlmutter 1994), never formed:

- top-k eigenvalues: Lanczos with full reorthogonalization to Ritz residual ≤ tol·‖H‖
  (:mod:`deepscope.linalg.lanczos`); its Kaniel-Paige-Saad rate depends on √(relative gap)
  where the power iteration of PyHessian (Yao, Gholami, Keutzer & Mahoney, IEEE BigData
  2020) depends on λ₂/λ₁, and its residual bounds the eigenvalue error;
- trace: Hutch++ (Meyer et al. 2021) or Hutchinson (1989) with ``probes`` products and a
  standard error (:mod:`deepscope.linalg.trace`);
- spectral density: stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019; Ubaru,
  Chen & Saad 2017), ``density_runs`` x ``lanczos_steps`` products (:mod:`deepscope.linalg.slq`).

``ggn=True`` replaces H by the generalized Gauss-Newton matrix G = Jᵀ H_out J (PSD for
cross-entropy and MSE). ``per_layer`` adds the same quantities for diagonal blocks of H: the
Hessian restricted to one module's parameters (``True``/``"module"``) or to one parameter
tensor (``"parameter"``), the other parameters held fixed.

Precision: float32 by default (speed), float64 for reference-grade numbers (tolerances 1e-8
and below). Cross-entropy is evaluated in the margin form of
:func:`deepscope.curvature.operators.stable_cross_entropy`, whose derivatives keep float32
precision on confident predictions (torch's formula loses eps/(1 − p_y): 2.7e-3 on the
top eigenvalue of the benchmark MLP at a loss of 5e-6, 1.9e-6 with the margin form;
docs/landscape.md, "Precision").
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable

import pandas as pd
import torch
from torch import nn

from deepscope._progress import progress_bar
from deepscope.curvature.operators import (CurvatureOperator, canonical_sign,
                                           check_deterministic, parameter_blocks,
                                           prepare_data, resolve_loss)
from deepscope.curvature.result import COLUMNS, HessianResult
from deepscope.curvature.start import START_MODES, output_layer_start
from deepscope.curvature.taylor import QuadraticForms
from deepscope.errors import ConfigError, ModelError
from deepscope.linalg.lanczos import top_eigenvalues
from deepscope.linalg.slq import slq
from deepscope.linalg.trace import trace_estimate
from deepscope._precision import ieee_float32

__all__ = ["hessian", "QUANTITIES"]

QUANTITIES = ("top", "trace", "density")


def _which(which) -> tuple[str, ...]:
    if isinstance(which, str):
        which = (which,)
    which = tuple(which)
    bad = [w for w in which if w not in QUANTITIES]
    if bad or not which:
        raise ConfigError(f"which must be a non-empty subset of {QUANTITIES}, got {which!r}")
    return which


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _block_rows(name: str, op: CurvatureOperator, which: Iterable[str], *, k: int,
                tol, rtol, trace_method: str, probes: int, density_runs: int,
                lanczos_steps: int,
                seed: int, eig_method: str, densities: dict, start_info: dict,
                start: str = "random", data=None, order: str = "largest",
                vectors: list | None = None, quadratic_forms: str = "auto") -> list[dict]:
    rows = []
    common = {"block": name, "num_params": op.dim}
    if "top" in which:
        kk = min(k, op.dim)
        v0 = bounds = None
        if start == "output-layer" and name == "all":
            x, y, loss_fn, batch_size = data
            v0, info = output_layer_start(op, x, y, loss_fn, batch_size=batch_size, seed=seed,
                                          k=kk)
            bounds = info["start_bounds"]
            start_info.update(info)
        before = op.num_matvecs
        method = eig_method if kk < op.dim else "lanczos"  # ARPACK needs k < dim
        want_vectors = vectors is not None and name == "all"
        eig = top_eigenvalues(op, op.dim, kk, which=order, tol=tol, rtol=rtol, seed=seed,
                              dtype=op.dtype, device=op.device, method=method, v0=v0,
                              lower_bounds=bounds, return_vectors=want_vectors)
        used = op.num_matvecs - before
        if want_vectors:
            vectors += [op.as_params(canonical_sign(eig.eigenvectors[:, i]))
                        for i in range(kk)]
        for i in range(kk):
            rows.append({**common, "quantity": "eigenvalue", "index": i,
                         "value": float(eig.eigenvalues[i]), "stderr": math.nan,
                         "residual": float(eig.residuals[i]), "num_hvps": used,
                         "method": method, "_converged": eig.converged})
    if "trace" in which:
        before = op.num_matvecs
        forms = QuadraticForms(op, quadratic_forms)
        tr = trace_estimate(op, op.dim, probes, method=trace_method, seed=seed + 1,
                            dtype=op.dtype, device=op.device, quadform=forms.rows)
        if name == "all":
            start_info.update({"trace_" + k: v for k, v in forms.info.items()})
        rows.append({**common, "quantity": "trace", "index": 0, "value": tr.value,
                     "stderr": tr.stderr, "residual": math.nan,
                     "num_hvps": op.num_matvecs - before, "method": trace_method})
    if "density" in which:
        densities[name] = slq(op, op.dim, runs=density_runs, steps=lanczos_steps,
                              seed=seed + 2, dtype=op.dtype, device=op.device)
    return rows


@ieee_float32
def hessian(model: nn.Module, data, *, loss=None, k: int = 5,
            which: Iterable[str] | str = QUANTITIES, trace_method: str = "hutch++",
            probes: int = 100, density_runs: int = 3, lanczos_steps: int = 64,
            per_layer: bool | str = False, ggn: bool = False, batch_size: int = 4096,
            max_samples: int | None = None, tol: float | None = None,
            rtol: float | None = None,
            eig_method: str = "lanczos", seed: int = 0, dtype: torch.dtype = torch.float32,
            device=None, start: str = "random", order: str = "largest",
            vectors: bool = False, quadratic_forms: str = "auto",
            progress: bool = True) -> HessianResult:
    """Curvature of the training loss: top-k eigenvalues, trace and spectral density.

    Args:
        model: an ``nn.Module`` (never mutated; evaluated in eval mode).
        data: a deepscope ``Dataset`` (its train split) or an ``(x, y)`` tuple.
        loss: ``"cross_entropy"``, ``"mse"``, a callable ``(outputs, targets) -> mean loss``,
            or None (by the data's task).
        k: number of top eigenvalues.
        order: which are "top": ``"largest"`` (algebraic, default) or ``"magnitude"``
            (largest |λ|, what PyHessian's power iteration converges to: at a saddle or at
            initialization it may return a negative eigenvalue).
        which: any of ``"top"``, ``"trace"``, ``"density"``.
        trace_method: ``"hutch++"`` or ``"hutchinson"``; ``probes`` is its number of products.
        quadratic_forms: how the trace's Hutchinson terms zᵀHz are computed: ``"auto"``
            (default: by second-order forward propagation, :mod:`deepscope.curvature.taylor`,
            about half a Hessian-vector product each, checked against one product and
            falling back to products where the model does not allow it; summary
            ``trace_quadratic_forms``, ``trace_taylor_fallback``) or ``"hvp"`` (products).
            Hutch++'s sketch always uses products.
        density_runs, lanczos_steps: SLQ start vectors and Lanczos steps per vector.
        per_layer: also per block: ``True``/``"module"`` (each module's own parameters) or
            ``"parameter"`` (each parameter tensor).
        ggn: the generalized Gauss-Newton matrix instead of the Hessian.
        batch_size: samples per product chunk (products are summed, weighted by batch size).
        max_samples: a random subset (drawn from ``seed``) of the data.
        tol: Lanczos Ritz-residual tolerance relative to ‖H‖ (default 1e-4 in float32, 1e-8
            in float64).
        rtol: also stop Lanczos once the estimated relative error of each top eigenvalue,
            min(r, r²/gap)/|θ|, is ≤ rtol (see :func:`deepscope.linalg.top_eigenvalues`):
            e.g. ``rtol=1e-3`` for three digits in fewer products. Lanczos only.
        eig_method: ``"lanczos"`` (ours) or ``"scipy"`` (ARPACK eigsh).
        start: Lanczos start vector for the top eigenvalues of the whole model:
            ``"random"`` (Gaussian from ``seed``) or ``"output-layer"`` (the top eigenvector
            of the output layer's diagonal block, from cheap block products, plus 10%
            noise: fewer full products on trained classifiers, more at initialization;
            :mod:`deepscope.curvature.start`). Lanczos only; per-layer blocks start random.
        vectors: also return the top-k eigenvectors of the whole model's Hessian
            (:attr:`HessianResult.eigenvectors`: per eigenvalue, unit norm over the
            trainable parameters, ``{name: tensor}`` in the parameters' shapes; sign:
            the entry of largest magnitude positive). Needs ``"top"`` in ``which``.
        seed: seeds the start vectors and probes; dtype: float32 or float64.
        device: where to compute (None: the model's device).
        progress: a progress bar counting Hessian-vector products.

    Returns:
        :class:`HessianResult` (table layout in :mod:`deepscope.curvature.result`).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    which = _which(which)
    k = _check_int("k", k, 1)
    probes = _check_int("probes", probes, 3 if trace_method == "hutch++" else 1)
    density_runs = _check_int("density_runs", density_runs, 1)
    lanczos_steps = _check_int("lanczos_steps", lanczos_steps, 1)
    if trace_method not in ("hutch++", "hutchinson"):
        raise ConfigError(f"trace_method must be 'hutch++' or 'hutchinson', got {trace_method!r}")
    if eig_method not in ("lanczos", "scipy"):
        raise ConfigError(f"eig_method must be 'lanczos' or 'scipy', got {eig_method!r}")
    if quadratic_forms not in ("auto", "hvp"):
        raise ConfigError(f"quadratic_forms must be 'auto' or 'hvp', got {quadratic_forms!r}")
    if order not in ("largest", "magnitude"):
        raise ConfigError(f"order must be 'largest' or 'magnitude', got {order!r}")
    if start not in START_MODES:
        raise ConfigError(f"start must be one of {START_MODES}, got {start!r}")
    if vectors and "top" not in which:
        raise ConfigError(f"vectors=True needs 'top' in which, got which={which!r}")
    if start != "random" and eig_method != "lanczos":
        raise ConfigError(f"start={start!r} applies to eig_method='lanczos' only")
    per = {False: None, True: "module", "module": "module", "parameter": "parameter"}
    if per_layer not in per:
        raise ConfigError(f"per_layer must be True, False, 'module' or 'parameter', "
                          f"got {per_layer!r}")
    if not any(True for _ in model.parameters()):
        raise ModelError("expected a model with parameters, got one with none")
    check_deterministic(model)
    x, y, task = prepare_data(data, max_samples=max_samples, seed=seed)
    loss_fn, loss_name = resolve_loss(loss, task)

    # the curvature the optimizer sees: parameters that require grad (frozen ones are held
    # fixed at their values, as in PyHessian)
    named = list(model.named_parameters())
    names = [n for n, p in named if p.requires_grad]
    if not names:
        raise ModelError("expected a model with trainable parameters, got one whose "
                         f"{len(named)} parameters all have requires_grad=False")
    blocks: list[tuple[str, list[str] | None]] = [
        ("all", None if len(names) == len(named) else names)]
    if per[per_layer] is not None:
        blocks += parameter_blocks(names, per[per_layer])

    t0 = time.perf_counter()
    rows: list[dict] = []
    densities: dict = {}
    start_info: dict = {}
    eigenvectors: list | None = [] if vectors else None
    total_hvps = 0
    with progress_bar(total=None, enabled=progress, desc="ggn products" if ggn
                      else "Hessian-vector products", unit="hvp") as bar:
        for name, members in blocks:
            op = CurvatureOperator(model, x, y, loss_fn, ggn=ggn, block=members,
                                   batch_size=batch_size, dtype=dtype, device=device,
                                   callback=lambda: bar.update(1))
            rows += _block_rows(name, op, which, k=k, tol=tol, rtol=rtol,
                                trace_method=trace_method,
                                probes=probes, density_runs=density_runs,
                                lanczos_steps=lanczos_steps, seed=seed,
                                eig_method=eig_method, densities=densities,
                                start=start, start_info=start_info, order=order,
                                data=(x, y, loss_fn, batch_size), vectors=eigenvectors,
                                quadratic_forms=quadratic_forms)
            total_hvps += op.num_matvecs  # full products (start_hvps: the block's)
    elapsed = time.perf_counter() - t0

    table = pd.DataFrame(rows, columns=[*COLUMNS, "_converged"])
    converged = table["_converged"].dropna()
    table = table[list(COLUMNS)].reset_index(drop=True)
    all_rows = table[table["block"] == "all"]
    eigs = all_rows[all_rows["quantity"] == "eigenvalue"]
    tr = all_rows[all_rows["quantity"] == "trace"]
    summary = {
        "curvature": "ggn" if ggn else "hessian",
        "num_params": int(sum(p.numel() for _, p in named if p.requires_grad)),
        "num_frozen_params": int(sum(p.numel() for _, p in named if not p.requires_grad)),
        "num_samples": int(x.shape[0]),
        "loss": loss_name,
        "top_eigenvalue": float(eigs["value"].iloc[0]) if len(eigs) else math.nan,
        "top_eigenvalue_residual": float(eigs["residual"].iloc[0]) if len(eigs) else math.nan,
        "eigenvalues": [float(v) for v in eigs["value"]],
        "converged": bool(converged.all()) if len(converged) else None,
        "trace": float(tr["value"].iloc[0]) if len(tr) else math.nan,
        "trace_stderr": float(tr["stderr"].iloc[0]) if len(tr) else math.nan,
        "density_trace": densities["all"].trace if "all" in densities else math.nan,
        "density_sigma": densities["all"].sigma if "all" in densities else math.nan,
        "num_blocks": len(blocks),
        "num_hvps": int(total_hvps),
        "start": start,
        **start_info,
        "time_s": elapsed,
    }
    settings = {"loss": loss_name, "k": k, "which": list(which), "trace_method": trace_method,
                "probes": probes, "density_runs": density_runs,
                "lanczos_steps": lanczos_steps, "per_layer": per[per_layer], "ggn": ggn,
                "batch_size": batch_size, "max_samples": max_samples, "tol": tol, "rtol": rtol,
                "eig_method": eig_method, "start": start, "order": order,
                "vectors": bool(vectors), "quadratic_forms": quadratic_forms, "seed": seed,
                "dtype": str(dtype).replace("torch.", ""),
                "device": str(device) if device is not None else None}
    return HessianResult(kind="ggn" if ggn else "hessian", table=table, summary=summary,
                         settings=settings, densities=densities,
                         eigenvectors=eigenvectors or [])
