"""Detect the parametrizations that break inverse stability of the realization map.

Berner, Elbrächter, Grohs et al. (NeurIPS 2019, Sec. 3) list what lets the parameters of a
shallow ReLU net f(x) = Σ_k a_k ReLU(w_k·x + b_k) + c move far while its realization stays
(almost) fixed; their inverse-stability theorem holds (in W^{1,∞}) on parameter sets that
avoid them. With v_k = (w_k, b_k) ∈ R^{d+1} and cos_ij = v_i·v_j / (‖v_i‖‖v_j‖):

========================  ===========================================================  ======
kind                      triggered when (quantity)                                    default
========================  ===========================================================  ======
``opposite``              1 + cos_ij <= direction_tol: v_i ≈ −λ v_j, λ > 0. Then         1e-3
                          a_i ReLU(v_i·x̃) + a_j ReLU(v_j·x̃) = λa_i ReLU(−z) + a_j ReLU(z)
                          with z = v_j·x̃, which is affine (= a_j z) when a_j = −λ a_i,
                          since ReLU(z) − ReLU(−z) = z
``parallel``              1 − cos_ij <= direction_tol: v_i ≈ λ v_j, λ > 0; the two        1e-3
                          neurons merge into one with outer weight λ a_i + a_j
``vanishing_outer``       ‖a_k‖ / max_j ‖a_j‖ <= outer_tol (with v_k ≠ 0)                1e-3
``unbalanced``            ‖a_k‖ / ‖v_k‖ outside [1/balance_ratio, balance_ratio]          10
                          (balanced nets have ratio 1; rescaling symmetry)
``dead``                  max_{x∈Ω} (w_k·x + b_k) <= dead_tol: the neuron never fires     0
                          on the domain (exact over a box: b_k + Σ_j max(w_kj lo_j,
                          w_kj hi_j); over data: the max over the points)
========================  ===========================================================  ======

Neurons with a_k = 0 and v_k = 0 (zero neurons) compute nothing and are not listed;
direction tests use only neurons with both ‖a_k‖ > 0 and ‖v_k‖ > 0. ``dead`` needs a
domain. The result is a :class:`~deepscope.result.Result` whose table has the columns
``PATHOLOGY_COLUMNS``: one row per finding, with the neuron indices in the net's own order.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepscope.errors import ConfigError
from deepscope.realization.distance import Domain, resolve_domain
from deepscope.realization.shallow import as_shallow
from deepscope.result import Result

__all__ = ["detect_pathologies", "PATHOLOGY_COLUMNS", "PATHOLOGY_KINDS"]

PATHOLOGY_KINDS = ("opposite", "parallel", "vanishing_outer", "unbalanced", "dead")
#: Table columns, in order.
PATHOLOGY_COLUMNS = ("kind", "neuron_i", "neuron_j", "quantity", "value", "threshold",
                     "detail")


def _check_pos(name: str, value, *, upper: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 \
        and math.isfinite(value) and (upper is None or value <= upper)
    if not ok:
        rng = f"in [0, {upper}]" if upper is not None else ">= 0"
        raise ConfigError(f"{name} must be a number {rng}, got {value!r}")
    return float(value)


def detect_pathologies(net, domain=None, *, direction_tol: float = 1e-3,
                       outer_tol: float = 1e-3, balance_ratio: float = 10.0,
                       dead_tol: float = 0.0, max_data: int | None = 10000,
                       seed: int = 0) -> Result:
    """List the pathologies of a shallow ReLU net (see the module docstring).

    Args:
        net: a shallow ReLU module or :class:`~deepscope.realization.shallow.ShallowReLU`.
        domain: None (no ``dead`` check), a box, or data points (see
            :func:`~deepscope.realization.distance.resolve_domain`).
        direction_tol: ``opposite``/``parallel`` when 1 ∓ cos <= direction_tol
            (1e-3 ≈ an angle of 2.6°).
        outer_tol: ``vanishing_outer`` when ‖a_k‖ <= outer_tol · max_j ‖a_j‖.
        balance_ratio: ``unbalanced`` when ‖a_k‖/‖v_k‖ is outside
            [1/balance_ratio, balance_ratio] (must be >= 1).
        dead_tol: ``dead`` when the largest pre-activation on the domain is <= dead_tol.
    """
    net = as_shallow(net)
    direction_tol = _check_pos("direction_tol", direction_tol, upper=2.0)
    outer_tol = _check_pos("outer_tol", outer_tol, upper=1.0)
    balance_ratio = _check_pos("balance_ratio", balance_ratio)
    if balance_ratio < 1:
        raise ConfigError(f"balance_ratio must be >= 1, got {balance_ratio!r}")
    if isinstance(dead_tol, bool) or not isinstance(dead_tol, (int, float)):
        raise ConfigError(f"dead_tol must be a number, got {dead_tol!r}")
    V = net.inner.detach().cpu().numpy()
    A = net.A.detach().cpu().numpy()
    vn, an = np.linalg.norm(V, axis=1), np.linalg.norm(A, axis=0)
    live = (vn > 0) & (an > 0)
    rows: list[dict] = []

    idx = np.where(live)[0]
    if len(idx) > 1:
        U = V[idx] / vn[idx, None]
        cos = np.clip(U @ U.T, -1.0, 1.0)
        iu, ju = np.triu_indices(len(idx), k=1)
        c = cos[iu, ju]
        for p in np.where(1 + c <= direction_tol)[0]:
            i, j = int(idx[iu[p]]), int(idx[ju[p]])
            lam = vn[i] / vn[j]
            resid = np.linalg.norm(A[:, j] + lam * A[:, i]) / (an[j] + lam * an[i])
            rows.append({"kind": "opposite", "neuron_i": i, "neuron_j": j,
                         "quantity": "1+cos", "value": float(1 + c[p]),
                         "threshold": direction_tol,
                         "detail": f"v_i = -{lam:.4g} v_j; ‖a_j + λ a_i‖ relative "
                                   f"{resid:.3g} ({'affine pair' if resid < 1e-3 else 'not affine'})"})
        for p in np.where(1 - c <= direction_tol)[0]:
            i, j = int(idx[iu[p]]), int(idx[ju[p]])
            lam = vn[i] / vn[j]
            merged = np.linalg.norm(lam * A[:, i] + A[:, j])
            rows.append({"kind": "parallel", "neuron_i": i, "neuron_j": j,
                         "quantity": "1-cos", "value": float(1 - c[p]),
                         "threshold": direction_tol,
                         "detail": f"v_i = {lam:.4g} v_j; mergeable into one neuron with "
                                   f"‖λ a_i + a_j‖ = {merged:.4g}"})
    top = an.max() if len(an) else 0.0
    for k in np.where(vn > 0)[0]:
        if top > 0 and an[k] <= outer_tol * top:
            rows.append({"kind": "vanishing_outer", "neuron_i": int(k), "neuron_j": -1,
                         "quantity": "|a_k|/max|a|", "value": float(an[k] / top),
                         "threshold": outer_tol,
                         "detail": f"|a_k| = {an[k]:.3g}, |(w_k,b_k)| = {vn[k]:.3g}"})
    for k in idx:
        r = an[k] / vn[k]
        if r > balance_ratio or r < 1.0 / balance_ratio:
            rows.append({"kind": "unbalanced", "neuron_i": int(k), "neuron_j": -1,
                         "quantity": "|a_k|/|(w_k,b_k)|", "value": float(r),
                         "threshold": balance_ratio,
                         "detail": f"|a_k| = {an[k]:.3g}, |(w_k,b_k)| = {vn[k]:.3g}"})
    dom = None
    if domain is not None:
        dom = domain if isinstance(domain, Domain) else resolve_domain(
            domain, net.input_dim, max_data=max_data, seed=seed)
        W, b = V[:, :-1], V[:, -1]
        if dom.data is not None:
            pre_max = (dom.data @ W.T + b).max(axis=0)
            where = "at every data point"
        else:
            lo, hi = dom.box[:, 0], dom.box[:, 1]
            pre_max = b + np.maximum(W * lo, W * hi).sum(axis=1)
            where = "on the whole box"
        for k in np.where(vn > 0)[0]:
            if pre_max[k] <= dead_tol and an[k] > 0:
                rows.append({"kind": "dead", "neuron_i": int(k), "neuron_j": -1,
                             "quantity": "max pre-activation", "value": float(pre_max[k]),
                             "threshold": float(dead_tol),
                             "detail": f"inactive {where}"})
    table = pd.DataFrame(rows, columns=list(PATHOLOGY_COLUMNS))
    counts = {k: int((table["kind"] == k).sum()) for k in PATHOLOGY_KINDS}
    summary = {"num_neurons": net.num_neurons, "num_live": int(live.sum()),
               "num_findings": len(table), "counts": counts,
               "clean": len(table) == 0}
    settings = {"direction_tol": direction_tol, "outer_tol": outer_tol,
                "balance_ratio": balance_ratio, "dead_tol": float(dead_tol),
                "domain": dom.describe() if dom is not None else None}
    return Result("pathologies", table, summary=summary, settings=settings)
