"""``deepscope.landscape.interpolate``: loss and error along the straight line between two models.

θ(t) = (1 - t) θ_a + t θ_b for t in ``linspace(0, 1, steps)``. The loss barrier of a split is

    B = max_t [ L(θ(t)) - ((1 - t) L(θ_a) + t L(θ_b)) ]

(Frankle, Dziugaite, Roy & Carbin, "Linear mode connectivity and the lottery ticket
hypothesis", ICML 2020; Entezari, Sedghi, Saukh & Neyshabur, "The role of permutation
invariance in linear mode connectivity of neural networks", ICLR 2022); the error barrier is
the same with the error 1 - accuracy. B = 0 when the loss never rises above the chord
(convex along the segment); two "linearly mode connected" solutions have B ≈ 0.

BatchNorm: parameters are interpolated, but the running statistics of θ(t) are not the
interpolation of the end points' statistics (the mean of the activations of an averaged
network is not the average of the means, and the variance collapses; Jordan et al. 2023,
"REPAIR"). ``bn="recompute"`` (default) re-estimates them at every t from the training
inputs (:class:`~deepscope.landscape.evaluate.PointEvaluator`), so the end points are the
models with re-estimated statistics. ``bn="keep"`` interpolates the buffers linearly as
well, the naive way, which is wrong for BatchNorm networks and is kept only to show the
difference; at t = 0 and t = 1 it reproduces the models exactly.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, ModelError, unknown_name
from deepscope.landscape.evaluate import BN_MODES, PointEvaluator, has_batchnorm
from deepscope.landscape.result_paths import InterpolationResult
from deepscope._precision import ieee_float32

__all__ = ["interpolate", "barrier", "resolve_model", "check_same_architecture"]


def resolve_model(source, what: str):
    """An ``nn.Module`` as it is, or a checkpoint path loaded with :func:`deepscope.load`.

    Returns ``(model, checkpoint or None)``.
    """
    if isinstance(source, nn.Module):
        return source, None
    if isinstance(source, (str, Path)):
        from deepscope.train.checkpoint import load_checkpoint
        ckpt = load_checkpoint(source)
        return ckpt.model, ckpt
    raise ConfigError(f"{what}: expected an nn.Module or a checkpoint path, "
                      f"got {type(source).__name__}")


def check_same_architecture(a: nn.Module, b: nn.Module) -> None:
    """Raise :class:`ModelError` unless ``a`` and ``b`` have the same parameters and buffers
    (names and shapes) and the same module types."""
    for kind, sa, sb in (("parameter", dict(a.named_parameters()), dict(b.named_parameters())),
                         ("buffer", dict(a.named_buffers()), dict(b.named_buffers()))):
        if list(sa) != list(sb):
            only_a = [n for n in sa if n not in sb]
            only_b = [n for n in sb if n not in sa]
            raise ModelError(f"models of different architectures: {kind}s only in a: "
                             f"{only_a[:3]}, only in b: {only_b[:3]}")
        for n in sa:
            if sa[n].shape != sb[n].shape:
                raise ModelError(f"models of different architectures: {kind} {n!r} has shape "
                                 f"{tuple(sa[n].shape)} in a and {tuple(sb[n].shape)} in b")
    ta = [(n, type(m).__name__) for n, m in a.named_modules()]
    tb = [(n, type(m).__name__) for n, m in b.named_modules()]
    if ta != tb:
        diff = next(((x, y) for x, y in zip(ta, tb) if x != y), (ta[len(tb):], tb[len(ta):]))
        raise ModelError(f"models of different architectures: module {diff[0]} in a, "
                         f"{diff[1]} in b")


def barrier(values, t) -> tuple[float, float]:
    """``(max_t [v(t) - ((1 - t) v(0) + t v(1))], argmax t)`` of a curve sampled at ``t``
    (``t`` increasing from 0 to 1)."""
    v = np.asarray(values, dtype=float)
    t = np.asarray(t, dtype=float)
    if v.size == 0 or np.isnan(v).all():
        return math.nan, math.nan
    if not (np.isfinite(v[0]) and np.isfinite(v[-1])):  # no chord: no barrier is defined
        return math.nan, math.nan
    excess = v - ((1 - t) * v[0] + t * v[-1])
    if np.isnan(excess).all():
        return math.nan, math.nan
    i = int(np.nanargmax(excess))
    return float(excess[i]), float(t[i])


def _interp_buffers(a: nn.Module, b: nn.Module, t: float) -> dict[str, Tensor]:
    """Floating buffers interpolated linearly; integer ones (num_batches_tracked) from the
    nearer end."""
    bb = dict(b.named_buffers())
    out = {}
    for n, x in a.named_buffers():
        y = bb[n]
        if x.is_floating_point():
            out[n] = x.detach() if t == 0 else (
                y.detach() if t == 1 else (1 - t) * x.detach() + t * y.detach())
        else:
            out[n] = (x if t < 0.5 else y).detach()
    return out


@ieee_float32
def interpolate(a, b, data=None, steps: int = 25, *, bn: str = "recompute", loss: str | None = None,
                batch_size: int = 1024, max_samples: int | None = None,
                bn_samples: int | None = None, progress: bool = True,
                seed: int = 0) -> InterpolationResult:
    """Loss, accuracy and barriers along θ(t) = (1 - t) θ_a + t θ_b.

    Args:
        a, b: models of the same architecture (``nn.Module``) or checkpoint paths
            (``deepscope.load(path).model``); never modified.
        data: a deepscope ``Dataset`` (train and test splits), an ``(x, y)`` pair (split
            ``train``) or ``{split: (x, y)}`` (needs ``train``: BatchNorm statistics are
            re-estimated from it). None when ``a`` and ``b`` are checkpoints: ``a``'s dataset.
        steps: number of points in ``linspace(0, 1, steps)`` (>= 2).
        bn: ``"recompute"`` (BatchNorm statistics re-estimated at every t) or ``"keep"``
            (buffers interpolated linearly: the naive, wrong way; see module docstring).
        loss: ``"cross_entropy"``, ``"mse"`` or None (the checkpoint's, else by task).
        batch_size: evaluation batch size (speed only).
        max_samples: evaluate each split on a seeded subset of at most this many samples.
        bn_samples: training samples used to re-estimate BatchNorm statistics (None: all).
        progress: a progress bar over the points.
        seed: seeds the subsets.

    Returns:
        :class:`~deepscope.landscape.result_paths.InterpolationResult`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps must be an integer >= 2, got {steps!r}")
    if bn not in BN_MODES:
        raise unknown_name("bn", bn, BN_MODES)
    model_a, ck_a = resolve_model(a, "a")
    model_b, ck_b = resolve_model(b, "b")
    check_same_architecture(model_a, model_b)
    if not any(True for _ in model_a.parameters()):
        raise ModelError("expected models with parameters, got ones with none")
    if data is None:
        if ck_a is None or ck_b is None:
            raise ConfigError("data is required unless a and b are both checkpoint paths "
                              "(then a's dataset is used)")
        data = ck_a.dataset()
    if loss is None and ck_a is not None:
        loss = ck_a.loss_name

    t0 = time.perf_counter()
    ev = PointEvaluator(model_a, data, loss=loss, bn=bn, bn_samples=bn_samples,
                        batch_size=batch_size, max_samples=max_samples, seed=seed)
    theta_a = ev.vector(model_a)
    theta_b = ev.vector(model_b)
    ts = np.linspace(0.0, 1.0, steps)
    classify = not ev.splits["train"][1].is_floating_point()  # integer labels: accuracy
    rows = []
    for t in progress_bar(ts, enabled=progress, desc="interpolating", unit="point"):
        t = float(t)
        theta = theta_a if t == 0.0 else (theta_b if t == 1.0 else
                                          (1.0 - t) * theta_a + t * theta_b)
        # buffers interpolated; with bn="recompute" the BatchNorm ones are then re-estimated
        buffers = _interp_buffers(model_a, model_b, t)
        row = {"t": t, **ev.evaluate(theta, buffers=buffers)}
        rows.append(row)
    splits = list(ev.splits)
    table = pd.DataFrame(rows)
    cols = ["t"]
    summary: dict = {}
    for s in splits:
        table[f"{s}_accuracy"] = table[f"{s}_accuracy"].astype(float)
        metrics = ["loss"]
        if classify:
            table[f"{s}_error"] = 1.0 - table[f"{s}_accuracy"]
            metrics.append("error")
        for m in metrics:
            v = table[f"{s}_{m}"].to_numpy(dtype=float)
            table[f"{s}_{m}_linear"] = (1 - ts) * v[0] + ts * v[-1]
            bar, where = barrier(v, ts)
            summary[f"barrier_{s}_{m}"] = bar
            summary[f"barrier_{s}_{m}_t"] = where
            summary[f"{s}_{m}_a"] = float(v[0])
            summary[f"{s}_{m}_b"] = float(v[-1])
        cols += [f"{s}_loss", f"{s}_accuracy"] + ([f"{s}_error"] if classify else []) + \
            [f"{s}_loss_linear"] + ([f"{s}_error_linear"] if classify else [])
    table = table[cols]
    summary.update({
        "steps": steps,
        "num_params": int(ev.dim),
        "distance": float(torch.linalg.vector_norm((theta_b - theta_a).double())),
        "loss": ev.loss,
        "bn": ev.bn,
        "has_batchnorm": has_batchnorm(model_a),
        "num_samples": {s: int(x.shape[0]) for s, (x, _) in ev.splits.items()},
        "time_s": time.perf_counter() - t0,
    })
    settings = {"steps": steps, "bn": bn, "loss": ev.loss, "batch_size": batch_size,
                "max_samples": max_samples, "bn_samples": bn_samples, "seed": seed,
                "splits": splits,
                "a": str(ck_a.path) if ck_a is not None else None,
                "b": str(ck_b.path) if ck_b is not None else None}
    return InterpolationResult(kind="interpolation", table=table, summary=summary,
                               settings=settings)
