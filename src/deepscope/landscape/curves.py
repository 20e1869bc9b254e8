"""Mode-connecting curves with one trained bend (Garipov et al., "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018, Sec. 3).

- Quadratic Bezier curve: φ(t) = (1−t)²θ_a + 2t(1−t)θ_c + t²θ_b.
- Polygonal chain with one bend: φ(t) = 2(tθ_c + (0.5−t)θ_a) for t ∈ [0, 0.5],
  2((t−0.5)θ_b + (1−t)θ_c) for t ∈ [0.5, 1].

The bend θ_c (initialized at the midpoint (θ_a + θ_b)/2) minimizes E_{t~U(0,1)} L(φ(t)):
one fresh t per mini-batch, a gradient step on θ_c only (:func:`deepscope.landscape.dss.fit`).
The curve is then evaluated at ``points`` (61 in the paper) equally spaced t.

Curve length: the polygonal chain's is ‖θ_c − θ_a‖ + ‖θ_b − θ_c‖ exactly; the Bezier curve's
is ∫‖φ'(t)‖dt, φ'(t) = 2(1−t)(θ_c − θ_a) + 2t(θ_b − θ_c), integrated with composite
Simpson's rule on 1025 points (‖φ'‖² is a quadratic in t computed from three inner products,
so the integral costs no parameter-space passes).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepscope.errors import ConfigError
from deepscope.landscape.dss import check_bead_train, fit, level_of

__all__ = ["CURVES", "curve_point", "curve_length", "train_bend", "evaluate_curve"]

CURVES = ("bezier", "polychain")


def curve_point(kind: str, t: float | Tensor, a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    """φ(t) of a Bezier curve / polygonal chain with end points a, b and bend c."""
    if kind == "bezier":
        return (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t ** 2 * b
    if kind == "polychain":
        if float(t) <= 0.5:
            return 2 * (t * c + (0.5 - t) * a)
        return 2 * ((t - 0.5) * b + (1 - t) * c)
    raise ConfigError(f"unknown curve {kind!r}: expected one of {', '.join(CURVES)}")


def curve_length(kind: str, a: Tensor, c: Tensor, b: Tensor) -> float:
    """Arc length of the curve (see the module docstring), float64."""
    a, c, b = (v.detach().double().reshape(-1).cpu() for v in (a, c, b))
    u, w = c - a, b - c
    if kind == "polychain":
        return float(torch.linalg.vector_norm(u) + torch.linalg.vector_norm(w))
    if kind != "bezier":
        raise ConfigError(f"unknown curve {kind!r}: expected one of {', '.join(CURVES)}")
    uu, uw, ww = float(u @ u), float(u @ w), float(w @ w)
    t = np.linspace(0.0, 1.0, 1025)
    speed = 2.0 * np.sqrt(np.maximum((1 - t) ** 2 * uu + 2 * t * (1 - t) * uw + t ** 2 * ww,
                                     0.0))
    h = t[1] - t[0]
    return float(h / 3 * (speed[0] + speed[-1] + 4 * speed[1:-1:2].sum()
                          + 2 * speed[2:-1:2].sum()))


def train_bend(evaluator, kind: str, theta_a: Tensor, theta_b: Tensor,
               options: Mapping[str, Any] | None, seed: int) -> tuple[Tensor, dict[str, Any]]:
    """Train θ_c by minimizing E_t L(φ(t)) (t ~ U(0,1) afresh per mini-batch)."""
    if kind not in CURVES:
        raise ConfigError(f"unknown curve {kind!r}: expected one of {', '.join(CURVES)}")
    opts = check_bead_train(options)
    a, b = theta_a.detach(), theta_b.detach()
    bend = (0.5 * (a + b)).clone().requires_grad_(True)

    def point(gen: torch.Generator) -> Tensor:
        t = float(torch.rand((), generator=gen))
        return curve_point(kind, t, a, bend, b)

    run = fit(evaluator, [bend], point, opts, seed)
    return bend.detach(), {"steps": run["steps"], "options": opts}


def evaluate_curve(evaluator, kind: str, theta_a: Tensor, bend: Tensor, theta_b: Tensor,
                   level: str, points: int = 61) -> list[dict[str, float]]:
    """Level, loss and error at ``points`` equally spaced t (rows with ``t``, ``segment``)."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigError(f"points must be an integer >= 2, got {points!r}")
    rows = []
    for t in np.linspace(0.0, 1.0, points):
        t = float(t)
        rec = level_of(evaluator, curve_point(kind, t, theta_a, bend, theta_b), level)
        seg = 0 if (kind == "bezier" or t <= 0.5) else 1
        rows.append({"t": t, "segment": seg, **rec})
    return rows
