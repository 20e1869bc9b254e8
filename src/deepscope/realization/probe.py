"""``deepscope.realization``: parametrization vs realization of two shallow ReLU nets.

Berner, Elbrächter, Grohs et al., "How degenerate is the parametrization of neural networks
with the ReLU activation function?" (NeurIPS 2019): the realization map
θ ↦ f_θ(x) = Σ_k a_k ReLU(w_k·x + b_k) + c is not inversely stable: nets can compute almost
the same function with parameters far apart, even modulo the symmetries of the net. This
probe puts the two distances side by side for a pair of nets a, b:

- parameter distance, raw (the flat parameter vectors in the given neuron order) and modulo
  symmetries (balanced canonical representatives, neurons matched by the Hungarian
  algorithm; :mod:`deepscope.realization.canonical`);
- realization distance on a domain Ω: sup ‖f_a − f_b‖ and the Sobolev W^{1,∞} version adding
  sup ‖J f_a − J f_b‖_F (:mod:`deepscope.realization.distance`);
- the pathologies of each net (:mod:`deepscope.realization.pathologies`): opposite or
  parallel neurons, vanishing outer weights, unbalanced scales, dead neurons on Ω.

Neither model is changed: the parameters are read (float64 copies) and the module is called
once in eval mode (flags restored) to check the reading.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepscope._device import resolve_device
from deepscope.realization.canonical import DEFAULT_TOL, check_ord, match_neurons, \
    parameter_distance
from deepscope.realization.distance import realization_distance, resolve_domain
from deepscope.realization.pathologies import PATHOLOGY_COLUMNS, detect_pathologies
from deepscope.realization.result import NEURON_COLUMNS, RealizationResult
from deepscope.realization.shallow import as_shallow
from deepscope._precision import ieee_float32

__all__ = ["realization"]


def _cosines(V: np.ndarray, U: np.ndarray) -> np.ndarray:
    nv, nu = np.linalg.norm(V, axis=1), np.linalg.norm(U, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (V * U).sum(1) / (nv * nu)
    cos[(nv == 0) | (nu == 0)] = np.nan
    return np.clip(cos, -1.0, 1.0)


@ieee_float32
def realization(a, b, domain=None, *, samples: int = 4096, seed: int = 0, ord=2,
                max_data: int | None = 10000, direction_tol: float = 1e-3,
                outer_tol: float = 1e-3, balance_ratio: float = 10.0,
                dead_tol: float = 0.0, tol: float = DEFAULT_TOL,
                device=None) -> RealizationResult:
    """Parameter distances (raw, modulo symmetries) vs realization distances of two nets.

    Args:
        a, b: shallow ReLU nets: deepscope MLPs with one hidden ReLU layer,
            ``nn.Sequential([Flatten], Linear, [BatchNorm1d], ReLU, [Dropout], Linear)``, or
            :class:`~deepscope.realization.shallow.ShallowReLU`; same input and output
            dimensions, widths may differ (the narrower is padded with zero neurons).
        domain: Ω: ``(lo, hi)`` for every input, a list of ``(lo, hi)`` per input, or data
            points (array / tensor (N, d) or a deepscope Dataset: its training inputs).
            None: the box [-1, 1]^d.
        samples: grid (d <= 2) or uniform sample (d > 2) size; data points come on top.
        seed: the uniform sample and the data subset.
        ord: 1, 2 or inf, the norm of the parameter distances.
        max_data: at most this many data points (seeded subset).
        direction_tol, outer_tol, balance_ratio, dead_tol: pathology thresholds
            (:func:`~deepscope.realization.pathologies.detect_pathologies`).
        tol: relative tolerance for zero / constant neurons in the canonicalization.
        device: where to evaluate (None: net a's device).

    Returns:
        :class:`RealizationResult`: table of matched neurons (``NEURON_COLUMNS``), summary
        (``param_distance``, ``param_distance_raw``, ``param_distance_relative`` (to
        ``param_norm_a``, the norm of a's canonical parameters), ``sup``, ``grad_sup``,
        ``sobolev``, ``sup_relative`` (to ``sup_a``), pathology counts per net),
        ``pathologies``, ``samples``.
    """
    ord = check_ord(ord)
    na, nb = as_shallow(a), as_shallow(b)
    if device is not None:
        dev = resolve_device(device)
        na, nb = na.to(dev), nb.to(dev)
    if domain is None:
        domain = (-1.0, 1.0)
    dom = resolve_domain(domain, na.input_dim, max_data=max_data, seed=seed)

    match = match_neurons(na, nb, ord=ord, tol=tol)
    raw = parameter_distance(na, nb, modulo_symmetries=False, ord=ord)
    dist = realization_distance(na, nb, dom, samples=samples, seed=seed)

    Va, Vb = (m.inner.detach().cpu().numpy() for m in (match.a, match.b))
    table = pd.DataFrame({
        "neuron_a": match.order_a, "neuron_b": match.order_b,
        "magnitude_a": np.linalg.norm(Va, axis=1), "magnitude_b": np.linalg.norm(Vb, axis=1),
        "cosine": _cosines(Va, Vb), "distance": match.costs,
    }, columns=list(NEURON_COLUMNS))
    table = table[(table["neuron_a"] >= 0) | (table["neuron_b"] >= 0)].reset_index(drop=True)

    kw = dict(direction_tol=direction_tol, outer_tol=outer_tol, balance_ratio=balance_ratio,
              dead_tol=dead_tol)
    pa, pb = detect_pathologies(na, dom, **kw), detect_pathologies(nb, dom, **kw)
    path = pd.concat([pa.table.assign(net="a"), pb.table.assign(net="b")], ignore_index=True)
    path = path[["net", *PATHOLOGY_COLUMNS]]

    norm_a = float(np.linalg.norm(match.a.parameter_vector().cpu().numpy(), ord))
    scale = max(dist.sup_a, 1e-300)
    summary = {
        "param_distance": match.distance,
        "param_distance_raw": raw,
        "param_distance_relative": match.distance / norm_a if norm_a > 0 else math.nan,
        "param_norm_a": norm_a,
        "sup": dist.sup, "grad_sup": dist.grad_sup, "sobolev": dist.sobolev, "rms": dist.rms,
        "sup_relative": dist.sup / scale if dist.sup_a > 0 else math.nan,
        "sup_a": dist.sup_a, "sup_b": dist.sup_b,
        "argmax": dist.argmax, "exact": dist.exact, "num_points": dist.num_points,
        "input_dim": na.input_dim, "output_dim": na.output_dim,
        "width_a": na.num_neurons, "width_b": nb.num_neurons,
        "live_neurons_a": match.num_real_a, "live_neurons_b": match.num_real_b,
        "pathologies_a": pa.summary["counts"], "pathologies_b": pb.summary["counts"],
        "num_pathologies_a": pa.summary["num_findings"],
        "num_pathologies_b": pb.summary["num_findings"],
    }
    settings = {"domain": dom.describe(), "box": dom.box.tolist(), "samples": samples,
                "seed": seed, "ord": "inf" if ord == math.inf else int(ord),
                "max_data": max_data, "tol": tol, **kw,
                "device": str(device) if device is not None else None}
    return RealizationResult(kind="realization", table=table, summary=summary,
                             settings=settings, pathologies=path,
                             samples={"points": dist.points, "value_diff": dist.value_diff,
                                      "grad_diff": dist.grad_diff})
