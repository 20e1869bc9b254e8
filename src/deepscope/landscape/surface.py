"""``deepscope.surface``: 1-D lines and 2-D planes of the loss around a trained model.

The loss is evaluated on a grid ``L(theta + a*d1 + b*d2)`` (Li, Xu, Taylor, Studer &
Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018; Goodfellow, Vinyals &
Saxe 2015 for 1-D lines) along filter-normalized Gaussian directions, the top-2 PCA
directions of a training trajectory, or directions the user gives
(:mod:`deepscope.landscape.directions`; the ``directions`` argument and the default span of
PCA directions: :mod:`deepscope.landscape.surface_directions`). This module checks the
arguments, lays out the grid (``steps`` and ``span`` per axis, ``a`` varying slowest),
evaluates the missing points chunk by chunk and assembles the :class:`SurfaceResult`.

Evaluation (``engine``: vmap over stacked parameter sets, a loop over one flat parameter
buffer, or :class:`~deepscope.landscape.evaluate.PointEvaluator` point by point, with a
fallback and ``summary["fallback_reason"]``): :mod:`deepscope.landscape.surface_engines`.
First-layer shortcut (``first_layer``, ``summary["first_layer_shortcut"]``):
:mod:`deepscope.landscape.surface_shortcut`.

The model is evaluated in eval mode (dropout off). BatchNorm (``bn``):

- ``"keep"`` (default): the model's own running statistics at every grid point, as Li et al.
  did (their evaluation calls ``net.eval()``; their directions leave BatchNorm parameters
  unchanged). Runs under vmap.
- ``"recompute"``: re-estimate the running statistics at every grid point from the training
  inputs (cumulative average over the training split, or its ``max_samples`` subset), as for
  interpolation curves (Frankle et al. 2020). Sequential: updating running statistics is a
  side effect vmap cannot batch.

Resume. With ``resume=PATH`` every finished chunk of grid points is added to a JSON file
(written atomically); a rerun with the same settings computes only the missing points. A file
written for other settings (grid, directions, seed, data, loss, model weights, ...) is refused
with a :class:`ConfigError` naming the differences (:mod:`deepscope.landscape.surface_resume`).

The user's model is never modified: everything runs on a deep copy.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._device import resolve_device
from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, ModelError, ShapeError, unknown_name
from deepscope.landscape.directions import direction_dot, direction_norm
from deepscope.landscape.evaluate import has_batchnorm, split_data
from deepscope.landscape.result_surface import COLUMNS, SurfaceResult
from deepscope.landscape.surface_directions import (DIRECTION_KINDS, pca_span,
                                                    resolve_directions)
from deepscope.landscape.surface_engines import (ENGINES, GridEvaluator, activation_numel,
                                                 default_points_per_batch)
from deepscope.landscape.surface_resume import (RESUME_FORMAT, open_resume, resume_key,
                                                write_resume)
from deepscope.landscape.surface_shortcut import FIRST_LAYER_MODES, SHORTCUT_MIN_FAN_IN
from deepscope.train.evaluate import (_check_output, check_loss_fits, default_loss,
                                      model_device_dtype)
from deepscope._precision import ieee_float32

__all__ = ["surface", "DIRECTION_KINDS", "BN_MODES", "ENGINES", "RESUME_FORMAT",
           "FIRST_LAYER_MODES", "SHORTCUT_MIN_FAN_IN"]

BN_MODES = ("keep", "recompute")


# ---------------------------------------------------------------------------- arguments
def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _steps(steps, dims: int) -> list[int]:
    if isinstance(steps, (list, tuple)):
        if len(steps) != dims:
            raise ConfigError(f"steps: expected one integer or {dims} integers for a "
                              f"{dims}-D surface, got {steps!r}")
        return [_check_int("steps", s, 2) for s in steps]
    return [_check_int("steps", steps, 2)] * dims


def _ranges(span, dims: int) -> list[tuple[float, float]]:
    """number s -> [-s, s] per axis; (lo, hi) -> that range per axis; ((lo, hi), ...) each."""
    def one(r) -> tuple[float, float]:
        if _is_num(r):
            if not (math.isfinite(float(r)) and float(r) > 0):
                raise ConfigError(f"span must be a finite number > 0, got {r!r}")
            return -float(r), float(r)
        if (isinstance(r, (list, tuple)) and len(r) == 2 and all(map(_is_num, r))
                and math.isfinite(float(r[0])) and math.isfinite(float(r[1]))
                and float(r[0]) < float(r[1])):
            return float(r[0]), float(r[1])
        raise ConfigError(f"span: expected a number s > 0 (range [-s, s]), a (low, high) pair "
                          f"with low < high, or one such per axis; got {span!r}")
    if isinstance(span, (list, tuple)) and len(span) == dims and all(
            isinstance(r, (list, tuple)) for r in span):
        return [one(r) for r in span]
    return [one(span)] * dims


def _subset(x: Tensor, y: Tensor, max_samples: int | None, seed: int, tag: int
            ) -> tuple[Tensor, Tensor]:
    if max_samples is not None and max_samples < x.shape[0]:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + tag)
        idx = torch.randperm(x.shape[0], generator=g)[:max_samples].sort().values
        return x[idx], y[idx]
    return x, y


@ieee_float32
def surface(model: nn.Module, data, dims: int = 2, steps: int | Sequence[int] = 25,
            span=None, directions="filter-normalized", *, trajectory: Sequence | None = None,
            split: str = "train", loss: str | None = None, batch_size: int = 4096,
            max_samples: int | None = None, points_per_batch: int | None = None,
            bn: str = "keep", include_bias: bool = False, include_bn: bool = False,
            resume: str | Path | None = None, seed: int = 0, device=None,
            engine: str = "auto", first_layer: bool | str = "auto", progress: bool = True,
            callback: Callable[[int, int], None] | None = None) -> SurfaceResult:
    """Loss and accuracy on a 1-D line or 2-D plane through ``model``'s parameters.

    Args:
        model: the center ``theta`` (an ``nn.Module``; never modified).
        data: a deepscope ``Dataset``, an ``(x, y)`` pair (the ``"train"`` split) or a dict
            ``{split: (x, y)}``.
        dims: 1 (line ``theta + a*d1``) or 2 (plane ``theta + a*d1 + b*d2``).
        steps: grid points per axis (an integer or one per axis), at least 2.
        span: a number ``s`` (each axis from ``-s`` to ``s``), a ``(low, high)`` pair, or one
            pair per axis. Default: 1.0 for filter-normalized / user directions; for
            pca-trajectory the projected trajectory plus a 20% margin.
        directions: ``"filter-normalized"`` (seeded Gaussian, Li et al. 2018),
            ``"pca-trajectory"`` (needs ``trajectory``), ``"hessian"`` (the top ``dims``
            eigenvectors of the loss Hessian on the evaluated data, unit norm, as PyHessian's
            plots; ``summary["hessian_eigenvalues"]``) or ``dims`` user directions (flat
            vectors or ``{name: tensor}`` dicts, used as given).
        trajectory: models / parameter dicts / checkpoint paths along training
            (pca-trajectory).
        split: which split of ``data`` to evaluate on.
        loss: ``"cross_entropy"``, ``"mse"`` or None (by task / target dtype).
        batch_size: samples per forward pass.
        max_samples: evaluate on a seeded random subset of this many samples.
        points_per_batch: grid points per vmapped call, and per resume-file write (None:
            from a memory budget: 256 MiB on CPUs, a quarter of the free memory up to 4 GiB
            on GPUs).
        bn: ``"keep"`` or ``"recompute"`` (module docstring); ignored without BatchNorm.
        include_bias, include_bn: the directions also move 1-D / BatchNorm parameters
            (zero by default, as Li et al.; for pca-trajectory those parameters are left out
            of the PCA, as the authors' ``plot_trajectory.py --ignore biasbn``).
        resume: a JSON file that keeps finished grid points (module docstring).
        seed: seeds the directions and the ``max_samples`` subset.
        device: where to compute (None: the model's device).
        engine: ``"auto"`` (vmap on GPUs; on CPUs vmap for small forwards, the loop for
            large ones; sequential where they cannot run),
            ``"vmap"``, ``"loop"`` or ``"sequential"``
            (:mod:`deepscope.landscape.surface_engines`).
        first_layer: evaluate a first Linear / convolution layer on the raw input as
            ``Z_0 + a Z_1 + b Z_2`` (exact up to rounding; three products per data batch
            instead of one per grid point): ``"auto"`` when its fan-in is at least
            ``SHORTCUT_MIN_FAN_IN`` (256), True whenever it applies, False never
            (:mod:`deepscope.landscape.surface_shortcut`).
        progress: a progress bar over grid points.
        callback: called as ``callback(points_done, points_total)`` after every chunk (after
            the resume file is written); an exception it raises stops the run.

    Returns:
        :class:`SurfaceResult` (columns ``i, j, a, b, loss, accuracy``; see
        :mod:`deepscope.landscape.result_surface`).
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dims not in (1, 2) or isinstance(dims, bool):
        raise ConfigError(f"dims must be 1 or 2, got {dims!r}")
    if bn not in BN_MODES:
        raise unknown_name("bn", bn, BN_MODES)
    if engine not in ENGINES:
        raise unknown_name("engine", engine, ENGINES)
    if not any(first_layer is m for m in FIRST_LAYER_MODES) and first_layer != "auto":
        raise ConfigError(f"first_layer must be 'auto', True or False, got {first_layer!r}")
    batch_size = _check_int("batch_size", batch_size, 1)
    if max_samples is not None:
        max_samples = _check_int("max_samples", max_samples, 1)
    if points_per_batch is not None:
        points_per_batch = _check_int("points_per_batch", points_per_batch, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    sizes = _steps(steps, dims)
    if not any(True for _ in model.parameters()):
        raise ModelError("expected a model with parameters, got one with none")

    # ---- data
    splits, task = split_data(data)
    if split not in splits:
        raise unknown_name("split", split, tuple(splits))
    x, y = splits[split]
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"split {split!r}: {x.shape[0]} inputs but {y.shape[0]} targets")
    if x.shape[0] == 0:
        raise ConfigError(f"split {split!r} has no samples")
    loss_name = loss if loss is not None else (
        default_loss(task) if task is not None else default_loss(y))
    check_loss_fits(loss_name, y)
    x, y = _subset(x, y, max_samples, seed, 0)

    # ---- private copy, parameters, device
    _, dtype = model_device_dtype(model)
    dev = resolve_device(device) if device is not None else model_device_dtype(model)[0]
    net = copy.deepcopy(model).to(dev)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    base = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.detach() for n, b in net.named_buffers()}
    x = x.to(dev, dtype) if x.is_floating_point() else x.to(dev)
    y = y.to(dev, dtype) if y.is_floating_point() else y.to(dev)
    with_bn = has_batchnorm(net)
    bn_used = bn if with_bn else "keep"

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    kind, dirs, info = resolve_directions(directions, net, base, dims, trajectory=trajectory,
                                          seed=seed, include_bias=include_bias,
                                          include_bn=include_bn,
                                          hessian_data=((x, y), loss_name, batch_size,
                                                        trainable))
    if span is None:
        ranges = pca_span(info["trajectory_coords"], dims) if kind == "pca-trajectory" \
            else _ranges(1.0, dims)
    else:
        ranges = _ranges(span, dims)
    axes = [np.linspace(lo, hi, s) for (lo, hi), s in zip(ranges, sizes)]
    coords_np = np.array(np.meshgrid(*axes, indexing="ij")).reshape(dims, -1).T  # (P, dims)
    total_points = coords_np.shape[0]

    # ---- output size, loss denominator, memory per point
    out1, act_numel = activation_numel(net, x[:1])
    _check_output(out1, y[:1], loss_name)
    denom = x.shape[0] if loss_name == "cross_entropy" else x.shape[0] * int(out1[0].numel())
    num_params = sum(p.numel() for p in base.values())
    x_bytes = next(iter(base.values())).element_size()
    if points_per_batch is None:
        points_per_batch = default_points_per_batch(num_params, batch_size, x.shape[0],
                                                    act_numel, dev)

    # ---- resume
    key = resume_key({"dims": dims, "steps": sizes, "ranges": [list(r) for r in ranges],
                      "directions": kind, "seed": seed, "include_bias": include_bias,
                      "include_bn": include_bn, "split": split, "loss": loss_name,
                      "max_samples": max_samples, "bn": bn_used, "num_samples": int(x.shape[0])},
                     model=[*base.values(), *buffers.values()], data=[x, y], directions=dirs)
    resume_path, done = open_resume(resume, key, total_points)
    resumed = len(done)

    # ---- engines
    def train_data() -> tuple[Tensor, Tensor]:
        # BatchNorm statistics come from the training inputs (the evaluated subset when the
        # training split is the one evaluated)
        return (x, y) if split == "train" else _subset(*splits["train"], max_samples, seed, 1)

    run_chunk = GridEvaluator(engine, dev, net, base, dirs, buffers, x, y, loss=loss_name,
                              batch_size=batch_size, denom=denom, bn=bn_used,
                              first_layer=first_layer, seed=seed, train_data=train_data,
                              point_bytes=(act_numel - int(x[0].numel()))
                              * min(batch_size, int(x.shape[0])) * x_bytes)

    # ---- evaluate the missing points, chunk by chunk (chunks fixed by grid index)
    todo = [i for i in range(total_points) if i not in done]
    chunks: dict[int, list[int]] = {}
    for i in todo:
        chunks.setdefault(i // points_per_batch, []).append(i)
    computed = 0
    with progress_bar(total=total_points, initial=resumed, enabled=progress,
                      desc=f"surface {'x'.join(map(str, sizes))}", unit="pt") as bar:
        for idx in chunks.values():
            losses, accs = run_chunk(coords_np[idx])
            for i, l, a in zip(idx, losses, accs):
                done[i] = (float(l), float(a))
            computed += len(idx)
            if resume_path is not None:
                write_resume(resume_path, key, done)
            bar.update(len(idx))
            if callback is not None:
                callback(len(done), total_points)

    # ---- center
    zero_idx = None
    if all(np.any(ax == 0.0) for ax in axes):
        ij = [int(np.flatnonzero(ax == 0.0)[0]) for ax in axes]
        zero_idx = ij[0] * (sizes[1] if dims == 2 else 1) + (ij[1] if dims == 2 else 0)
        center_loss, center_acc = done[zero_idx]
    else:
        cl, ca = run_chunk(np.zeros((1, dims)))
        center_loss, center_acc = float(cl[0]), float(ca[0])

    # ---- result
    rows = []
    for p in range(total_points):
        i, j = (p // sizes[1], p % sizes[1]) if dims == 2 else (p, 0)
        l, a = done[p]
        rows.append({"i": i, "j": j, "a": float(coords_np[p, 0]),
                     "b": float(coords_np[p, 1]) if dims == 2 else 0.0,
                     "loss": l, "accuracy": a})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    finite = table[np.isfinite(table["loss"])]
    amin = finite["loss"].idxmin() if len(finite) else None
    elapsed = time.perf_counter() - t0
    evaluation = run_chunk.mode if computed else "resumed"
    summary = {
        "dims": dims, "steps": sizes, "num_points": total_points,
        "ranges": [list(r) for r in ranges],
        "directions": kind,
        "center_loss": center_loss, "center_accuracy": center_acc,
        "min_loss": float(finite["loss"].min()) if len(finite) else math.nan,
        "min_at": ([float(table.loc[amin, "a"]), float(table.loc[amin, "b"])][:dims]
                   if amin is not None else None),
        "max_loss": float(finite["loss"].max()) if len(finite) else math.nan,
        "num_nonfinite": int(total_points - len(finite)),
        "direction_norms": [direction_norm(d) for d in dirs],
        "parameter_norm": direction_norm(base),
        "direction_cosine": (direction_dot(dirs[0], dirs[1]) / max(
            direction_norm(dirs[0]) * direction_norm(dirs[1]), 1e-300)) if dims == 2 else None,
        "hessian_eigenvalues": info.get("hessian_eigenvalues"),
        "explained_variance": info.get("explained_variance"),
        "explained_variance_ratio": info.get("explained_variance_ratio"),
        "trajectory_coords": info.get("trajectory_coords"),
        "split": split, "loss": loss_name, "num_samples": int(x.shape[0]),
        "num_params": int(num_params), "bn": bn_used, "has_batchnorm": with_bn,
        "evaluation": evaluation,
        "fallback_reason": run_chunk.fallback_reason, "engine_note": run_chunk.note,
        "first_layer_shortcut": run_chunk.first_layer,
        "points_per_batch": points_per_batch,
        "points_computed": computed, "points_resumed": resumed,
        "time_s": elapsed,
        "time_per_point_s": elapsed / computed if computed else math.nan,
    }
    settings = {"dims": dims, "steps": sizes, "span": [list(r) for r in ranges],
                "directions": kind, "split": split, "loss": loss_name,
                "batch_size": batch_size, "max_samples": max_samples,
                "points_per_batch": points_per_batch, "bn": bn, "include_bias": include_bias,
                "include_bn": include_bn, "resume": str(resume_path) if resume_path else None,
                "seed": seed, "device": str(dev), "engine": engine, "first_layer": first_layer}
    dirs_cpu = [{k: v.detach().cpu().clone() for k, v in d.items()} for d in dirs]
    return SurfaceResult(kind="surface", table=table, summary=summary, settings=settings,
                         directions=dirs_cpu)
