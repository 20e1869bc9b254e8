"""Over-parameterization and Gram-matrix stability (Du, Zhai, Poczos & Singh, ICLR 2019,
"Gradient descent provably optimizes over-parameterized neural networks").

Setting (theirs): two-layer ReLU nets f(x) = (1/√m) Σ_r a_r ReLU(w_rᵀx), w_r(0) ~ N(0, I_d),
a_r uniform ±1 and fixed (a buffer: only the first layer is trained), unit-norm inputs, loss
L = ½ Σ_i (f(x_i) − y_i)², full-batch gradient descent w ← w − η ∇L. Data: the ``teacher``
regression task (a random two-layer ReLU teacher, :mod:`deepscope.data.synthetic`) with n
points in d dimensions; the inputs are projected onto the unit sphere and the targets scaled
to unit root-mean-square (their assumption |y_i| = O(1)).

Their theory: with H∞ the infinite-width Gram (:mod:`deepscope.dynamics.hinf`) and
λ0 = λ_min(H∞) > 0, for m large enough λ_min(H(t)) >= λ0/2 throughout training and the loss
decays linearly, L(k) <= (1 − ηλ0/2)^k L(0), while every neuron moves by at most
R' = O(√n ‖y − u(0)‖ / (√m λ0)), so weight displacement, Gram drift and the fraction of flipped
activation patterns shrink like m^{-1/2}; the Gram at initialization approaches H∞ at the
Monte-Carlo rate m^{-1/2}.

Step size. Their η = O(λ0/n²) is needlessly small: the linearized dynamics u(k+1) − y ≈
(I − ηH)(u(k) − y) are stable for η < 2/λ_max(H), so we take η = ``step_scale`` / λ_max(H∞)
(default 1, a factor 2 inside the stability limit; λ_max(H(t)) stays within a few percent of
λ_max(H∞) at the widths used). The slowest mode then contracts the loss by (1 − ηλ0)² per
step, which sets the default number of steps (``steps=None``: enough for that mode to fall by
``e^{-20}``, capped at 5000).

Per width m and seed: the empirical NTK (:func:`deepscope.dynamics.ntk.ntk`) at
initialization vs H∞ (relative Frobenius error), and at ``eval_points`` steps (geometrically
spaced) its drift, λ_min, the flipped activation patterns and the weight displacement
(:class:`deepscope.dynamics.monitor.GramTracker`); the training loss at every step, its
fitted linear rate (least squares of log L on k over the steps after the loss fell below 1 %
of L(0)) vs (1 − ηλ0)² and Du et al.'s bound 1 − ηλ0/2. Across widths: log-log slopes vs m of
the final drift, the max neuron displacement, the flipped fraction and the init error
(theory −1/2).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._progress import progress_bar
from deepscope.dynamics.result import OverparamResult
from deepscope.errors import ConfigError

__all__ = ["TwoLayerReLU", "overparam_data", "overparam_experiment", "DEFAULT_WIDTHS"]

DEFAULT_WIDTHS = (16, 64, 256, 1024, 4096, 16384)
MAX_AUTO_STEPS = 5000


class TwoLayerReLU(nn.Module):
    """f(x) = (1/√m) Σ_r a_r ReLU(w_rᵀx) (Du et al. 2019): ``weight`` (m, d) ~ N(0, I) is the
    only parameter; ``a`` (m,) uniform ±1 is a buffer. Output shape (n, 1)."""

    def __init__(self, d: int, m: int, *, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.weight = nn.Parameter(torch.randn(m, d, generator=g, dtype=dtype))
        signs = torch.randint(0, 2, (m,), generator=g).to(dtype) * 2 - 1
        self.register_buffer("a", signs)
        self.relu = nn.ReLU()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(x @ self.weight.T)
        return (h @ self.a / math.sqrt(self.m)).unsqueeze(-1)


def overparam_data(n: int = 40, d: int = 10, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Unit-norm inputs (n, d) and unit-RMS targets (n, 1) of the teacher regression task."""
    from deepscope.data import load_dataset
    ds = load_dataset({"name": "teacher", "task": "regression", "input_dim": int(d),
                       "n_train": int(n), "n_test": 1, "seed": int(seed),
                       "standardize": False})
    x = ds.x_train.double()
    x = x / x.norm(dim=1, keepdim=True)
    y = ds.y_train.double().reshape(n, 1)
    y = y - y.mean()
    y = y / y.pow(2).mean().sqrt()
    return x, y


def _check_ints(name: str, values, low: int) -> list[int]:
    try:
        vals = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of integers, got {values!r}") from None
    if not vals or any(v < low for v in vals) or any(isinstance(v, bool) for v in values):
        raise ConfigError(f"{name} must be a non-empty list of integers >= {low}, got "
                          f"{list(values)!r}")
    return vals


def _eval_steps(steps: int, points: int) -> list[int]:
    grid = np.unique(np.round(np.geomspace(1, steps, max(2, points - 1))).astype(int))
    return sorted({0, *map(int, grid), steps})


def _fit_rate(loss: np.ndarray) -> tuple[float, float, int]:
    """Per-step contraction exp(slope) of log loss, R² of the fit, points used."""
    l0 = loss[0]
    ok = np.nonzero((loss <= 1e-2 * l0) & (loss > 1e-25 * max(l0, 1e-300)))[0]
    if len(ok) < 5:
        ok = np.arange(len(loss) // 2, len(loss))
    k, y = ok.astype(float), np.log(loss[ok])
    if len(k) < 3 or not np.all(np.isfinite(y)):
        return math.nan, math.nan, len(k)
    slope, icpt = np.polyfit(k, y, 1)
    resid = y - (slope * k + icpt)
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((resid ** 2).sum()) / ss if ss > 0 else math.nan
    return float(math.exp(slope)), r2, len(k)


def _slope(ms: np.ndarray, vals: np.ndarray) -> float:
    ok = np.isfinite(vals) & (vals > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(ms[ok]), np.log(vals[ok]), 1)[0])


def _run_width(x: Tensor, y: Tensor, m: int, seed: int, eta: float, steps: int,
               evals: list[int], hinf: Tensor, lambda0: float) -> tuple[dict, list, np.ndarray]:
    from deepscope.dynamics.monitor import GramTracker
    net = TwoLayerReLU(x.shape[1], m, seed=seed)
    tracker = GramTracker(net, x, outputs="sum", dtype=torch.float64)
    init_err = float((tracker.gram0 - hinf).norm() / hinf.norm())
    losses = np.empty(steps + 1)
    curves = []
    w = net.weight
    for k in range(steps + 1):
        u = net(x)
        loss = 0.5 * ((u - y) ** 2).sum()
        losses[k] = float(loss.detach())
        if not math.isfinite(losses[k]):
            raise ConfigError(f"gradient descent diverged at width {m}, step {k} (eta={eta:g})"
                              f"; use a smaller step_scale")
        if k in evals:
            row = tracker.measure(net)
            curves.append({"width": m, "seed": seed, "step": k, "loss": losses[k], **row,
                           "lambda_min_ratio": row["lambda_min"] / lambda0})
        if k == steps:
            break
        (g,) = torch.autograd.grad(loss, [w])
        with torch.no_grad():
            w -= eta * g
    rate, r2, used = _fit_rate(losses)
    ratios = [c["lambda_min_ratio"] for c in curves]
    last = curves[-1]
    row = {"width": m, "seed": seed, "init_error": init_err,
           "lambda_min_init": tracker.lambda_min0, "lambda_min_min": min(c["lambda_min"]
                                                                        for c in curves),
           "min_ratio": min(ratios), "above_half": bool(min(ratios) >= 0.5),
           "loss_init": losses[0], "loss_final": losses[-1], "rate": rate, "rate_r2": r2,
           "rate_points": used, "drift": last["drift"], "max_drift": max(c["drift"]
                                                                        for c in curves),
           "flipped": last["flipped"], "max_displacement": last["max_displacement"],
           "rel_displacement": last["rel_displacement"]}
    return row, curves, losses


def overparam_experiment(*, widths: Sequence[int] = DEFAULT_WIDTHS, n: int = 40, d: int = 10,
                         seeds: Sequence[int] = (0, 1, 2), data_seed: int = 0,
                         steps: int | None = None, step_scale: float = 1.0,
                         eval_points: int = 25, progress: bool = True) -> OverparamResult:
    """Train Du et al.'s two-layer ReLU nets of growing width; measure Gram stability.

    Args:
        widths: hidden widths m.
        n, d: number of teacher points and input dimension; data_seed: the teacher/data seed.
        seeds: initialization seeds (one run per width and seed).
        steps: gradient-descent steps (None: by the slowest mode, see the module docstring).
        step_scale: η = step_scale / λ_max(H∞) (stable for step_scale < 2).
        eval_points: steps (geometric grid, plus 0 and the last) at which the NTK is computed.
        progress: a progress bar over runs.

    Returns:
        :class:`~deepscope.dynamics.result.OverparamResult`: ``table`` per (width, seed),
        ``curves`` per evaluated step, ``losses`` per step; ``summary`` with λ0, η, the
        fitted log-log slopes vs width and the theory's predictions.
    """
    widths = _check_ints("widths", widths, 1)
    seeds = _check_ints("seeds", seeds, 0)
    for name, v, low in (("n", n, 2), ("d", d, 2), ("eval_points", eval_points, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise ConfigError(f"steps must be an integer >= 1 or None, got {steps!r}")
    if not (isinstance(step_scale, (int, float)) and 0 < step_scale < 2):
        raise ConfigError(f"step_scale must be in (0, 2) (η = step_scale/λ_max(H∞) is "
                          f"unstable beyond 2), got {step_scale!r}")
    from deepscope.dynamics.hinf import hinf_gram
    t0 = time.perf_counter()
    x, y = overparam_data(n, d, seed=data_seed)
    hinf = hinf_gram(x)
    ev = np.linalg.eigvalsh(hinf.numpy())
    lambda0, lambda_max = float(ev[0]), float(ev[-1])
    eta = float(step_scale) / lambda_max
    theory_rate = (1 - eta * lambda0) ** 2
    if steps is None:
        steps = int(min(MAX_AUTO_STEPS, math.ceil(20 / -math.log(theory_rate))))
    evals = _eval_steps(steps, eval_points)
    rows, curves, losses = [], [], []
    runs = [(m, s) for m in widths for s in seeds]
    for m, s in progress_bar(runs, enabled=progress, desc="overparam", unit="run"):
        row, cur, loss = _run_width(x, y, m, s, eta, steps, evals, hinf, lambda0)
        rows.append(row)
        curves += cur
        losses.append(pd.DataFrame({"width": m, "seed": s, "step": np.arange(steps + 1),
                                    "loss": loss}))
    table = pd.DataFrame(rows)
    means = table.groupby("width").mean(numeric_only=True)
    ms = means.index.to_numpy(dtype=float)
    summary = {
        "n": n, "d": d, "lambda0": lambda0, "lambda_max_hinf": lambda_max, "eta": eta,
        "eta_rule": f"eta = {step_scale:g} / lambda_max(H_inf)",
        "eta_theory_scale": lambda0 / n ** 2, "steps": steps,
        "rate_theory": theory_rate, "rate_bound": 1 - eta * lambda0 / 2,
        "slope_drift": _slope(ms, means["drift"].to_numpy()),
        "slope_max_displacement": _slope(ms, means["max_displacement"].to_numpy()),
        "slope_rel_displacement": _slope(ms, means["rel_displacement"].to_numpy()),
        "slope_flipped": _slope(ms, means["flipped"].to_numpy()),
        "slope_init_error": _slope(ms, means["init_error"].to_numpy()),
        "slope_theory": -0.5,
        "widths_above_half": [int(m) for m, ok in
                              table.groupby("width")["above_half"].all().items() if ok],
        "time_s": time.perf_counter() - t0,
    }
    settings = {"widths": widths, "n": n, "d": d, "seeds": seeds, "data_seed": data_seed,
                "steps": steps, "step_scale": step_scale, "eval_points": eval_points,
                "dataset": "teacher (regression), unit-norm inputs, unit-RMS targets"}
    return OverparamResult(kind="overparam", table=table, summary=summary, settings=settings,
                           curves=pd.DataFrame(curves), losses=pd.concat(losses,
                                                                         ignore_index=True))
