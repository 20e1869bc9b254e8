"""``deepscope.spectra``: the per-layer heavy-tailed self-regularization analysis of a model.

Pipeline (Martin & Mahoney, JMLR 2021; Nature Communications 2021):
source (module / checkpoint / safetensors / .pt / HF dir) -> weight matrices per layer
(:mod:`~deepscope.weights.sources`) -> eigenvalues λ = σ²(W), same-shape matrices batched in
float32 on the weights' device (:mod:`~deepscope.weights.eigs`) -> per-spectrum analysis:
power-law tail fit, norms, Marchenko-Pastur bulk and spikes, phase
(:mod:`~deepscope.weights.analyze`) -> one table row per layer plus a summary.

Optional: the randomized-weights comparison (correlation traps). Each matrix is shuffled
element-wise (seeded); the shuffled matrix has iid entries with the same empirical
distribution, so its ESD must follow Marchenko-Pastur with σ² = the entries' variance.
``num_traps`` counts its eigenvalues above that MP edge plus the Tracy-Widom margin (large
single entries, "correlation traps"); ``rand_lambda_max`` is its top eigenvalue and
``rand_distance`` the Jensen-Shannon distance (base 2, in [0, 1]) between the histograms of
log10 λ of the layer and of its shuffle on a common binning. (weightwatcher's
``rand_distance`` feeds the raw sorted eigenvalue arrays to a JS formula as if they were
probability vectors; ours compares the two densities.)
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError
from deepscope.weights.analyze import analyze_spectrum
from deepscope.weights.eigs import eigenvalues, randomize_matrix
from deepscope.weights.matrices import DEFAULT_MIN_DIM, DEFAULT_MIN_EVALS, LayerMatrices
from deepscope.weights.mp import DEFAULT_TW_MARGIN, mp_edges, tracy_widom_scale
from deepscope.weights.result import COLUMNS, SpectraResult, summarize
from deepscope.weights.sources import iter_layer_matrices
from deepscope._precision import ieee_float32

__all__ = ["spectra"]


def _rows_of(source, **kw) -> list[LayerMatrices]:
    return list(iter_layer_matrices(source, **kw))


def _js_distance_log_hist(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between histograms of log10 λ on a common binning
    of ~sqrt(n) bins (5 to 100)."""
    a = np.log10(a[a > 0])
    b = np.log10(b[b > 0])
    if a.size == 0 or b.size == 0:
        return math.nan
    bins = int(np.clip(np.sqrt(min(a.size, b.size)), 5, 100))
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 0.0
    p, edges = np.histogram(a, bins=bins, range=(lo, hi))
    q, _ = np.histogram(b, bins=edges)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.nansum(np.where(p > 0, p * np.log2(p / m), 0.0))
        kl_q = np.nansum(np.where(q > 0, q * np.log2(q / m), 0.0))
    return float(np.sqrt(max(0.0, (kl_p + kl_q) / 2)))


def _randomized(row: LayerMatrices, evals: np.ndarray, gen: torch.Generator,
                dtype: torch.dtype, device, scale: float) -> dict[str, Any]:
    mats = row.matrices
    # small layers: pool several shuffles for the distance so it is not dominated by noise;
    # traps and rand_lambda_max come from the first shuffle
    replicas = 5 if row.num_evals < 100 else 1
    shuffles = [eigenvalues([_Shuffled(row, randomize_matrix(mats, gen))], dtype=dtype,
                            device=device)[row.name] * scale for _ in range(replicas)]
    sigma = float(mats.double().std(unbiased=False)) * math.sqrt(scale)
    Q = row.N / row.M
    # normalized MP edge of iid entries with the shuffled matrix's exact variance, plus the
    # Tracy-Widom margin used for spikes; back to the scale of λ = σ²(W) (times N)
    edge = row.N * (mp_edges(Q, sigma)[1]
                    + DEFAULT_TW_MARGIN * tracy_widom_scale(Q, row.M, sigma))
    first = shuffles[0]
    return {"rand_lambda_max": float(first[-1]),
            "num_traps": int(np.sum(first > edge)),
            "rand_distance": _js_distance_log_hist(evals, np.concatenate(shuffles))}


class _Shuffled(LayerMatrices):
    def __init__(self, row: LayerMatrices, mats: torch.Tensor):
        super().__init__(name=row.name, type=row.type, N=row.N, M=row.M,
                         num_matrices=row.num_matrices, module=row.module, shape=row.shape,
                         _load=lambda: mats)


def _module_if_checkpoint(source, streaming: bool):
    """A deepscope checkpoint is rebuilt as its module (real layer types) unless streaming."""
    if streaming or isinstance(source, torch.nn.Module):
        return source
    from deepscope.train.checkpoint import is_checkpoint, load_checkpoint
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.is_file() and is_checkpoint(path):
        return load_checkpoint(path).model
    return source


@ieee_float32
def spectra(model, *, layers=None, conv: str = "slices", min_dim: int = DEFAULT_MIN_DIM,
            min_evals: int = DEFAULT_MIN_EVALS, max_dim: int | None = None,
            min_tail: int | None = None, bootstrap: int = 0, ci_level: float = 0.9,
            truncated: bool = False, randomize: bool = False, seed: int = 0,
            dtype: torch.dtype = torch.float32, device=None, streaming: bool = False,
            conv2d_norm: bool = True, trust_pickle: bool = False,
            progress: bool = True) -> SpectraResult:
    """Heavy-tailed self-regularization analysis, one row per weight matrix.

    Args:
        model: an ``nn.Module``, a deepscope checkpoint, a bare ``.safetensors`` file (every
            tensor of rank >= 2 is a candidate), a ``.pt`` state dict, or a Hugging Face model
            directory.
        layers: filter: names, a regex (``"re:..."`` or compiled), layer types, or a mix.
        conv: ``"slices"`` (pooled kh x kw slices, the literature's and weightwatcher's
            convention) or ``"reshape"`` (out x in*kh*kw).
        conv2d_norm: as weightwatcher's default (``conv2d_norm=True``), Conv2d slices are
            scaled by 1/sqrt(2), i.e. their eigenvalues halved, so that scale-dependent
            columns (lambda_max, xmin, log norms, alpha_weighted, mp_sigma) equal
            weightwatcher's; alpha and the phase do not depend on it. False: raw weights.
        min_dim, min_evals, max_dim: size rules; rows outside them are listed with a reason.
        min_tail: minimum number of tail eigenvalues for a power-law fit (None: default of
            :func:`~deepscope.weights.powerlaw.fit_power_law`).
        bootstrap: number of bootstrap resamples for the alpha confidence interval (0: none).
        ci_level: confidence level of that interval.
        truncated: also fit an exponentially truncated power law.
        randomize: add the randomized-weights comparison (``rand_lambda_max``,
            ``num_traps``, ``rand_distance``), seeded by ``seed``.
        dtype: eigenvalue precision (float32 default; float64 for near-zero eigenvalues).
        device: where to compute eigenvalues (None: where the weights are).
        streaming: read file sources one tensor at a time (peak memory ~ one layer).
        trust_pickle: allow unpickling a whole module from a ``.pt`` file.
        progress: show a progress bar.

    Returns:
        :class:`SpectraResult` with ``table`` (one row per matrix, stable columns), ``summary``
        (weightwatcher-compatible means over successfully fitted layers, failed fits and
        phases counted) and ``evals`` (eigenvalues per analyzed layer, for plots).
    """
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    if not 0 < ci_level < 1:
        raise ConfigError(f"ci_level must be in (0, 1), got {ci_level}")
    src_kw = dict(layers=layers, conv=conv, min_dim=min_dim, min_evals=min_evals,
                  max_dim=max_dim, trust_pickle=trust_pickle, streaming=streaming)
    fit_kw: dict[str, Any] = dict(bootstrap=bootstrap, level=ci_level, seed=seed,
                                  truncated=truncated)
    if min_tail is not None:
        fit_kw["min_tail"] = min_tail
    gen = torch.Generator().manual_seed(int(seed))
    settings = dict(layers=None if layers is None else str(layers), conv=conv,
                    min_dim=min_dim, min_evals=min_evals, max_dim=max_dim, min_tail=min_tail,
                    bootstrap=bootstrap, ci_level=ci_level, truncated=truncated,
                    randomize=randomize, seed=seed, dtype=str(dtype).replace("torch.", ""),
                    streaming=streaming, conv2d_norm=conv2d_norm)

    model = _module_if_checkpoint(model, streaming)
    with torch.no_grad():
        rows_iter: Iterable[LayerMatrices] = iter_layer_matrices(model, **src_kw)
        if streaming:
            evals_of = None
        else:
            rows_iter = list(rows_iter)
            evals_of = eigenvalues(rows_iter, dtype=dtype, device=device)
        records, all_evals = [], {}
        bar = progress_bar(rows_iter, enabled=progress, desc="spectra", unit="layer",
                           total=None if streaming else len(rows_iter))
        for row in bar:
            rec: dict[str, Any] = {"layer": row.name, "type": row.type, "N": row.N,
                                   "M": row.M, "Q": row.N / row.M if row.M else math.nan,
                                   "num_matrices": row.num_matrices}
            if row.skipped:
                # a layer with NaN/inf weights is an error row; too small / unsupported: skipped
                status = "not_finite" if row.skip_reason.startswith("not finite") else "skipped"
                rec.update(fit_status=status, phase="undetermined", note=row.skip_reason,
                           num_evals=row.num_evals)
                records.append(rec)
                continue
            ev = evals_of[row.name] if evals_of is not None else \
                eigenvalues([row], dtype=dtype, device=device)[row.name]
            scale = 0.5 if (conv2d_norm and conv == "slices" and row.type == "Conv2d") else 1.0
            if scale != 1.0:
                ev = ev * scale
            rec.update(analyze_spectrum(ev, row.N, row.M, num_matrices=row.num_matrices,
                                        **fit_kw))
            rec.setdefault("note", None)
            if randomize and np.all(np.isfinite(ev)):
                rec.update(_randomized(row, ev, gen, dtype, device, scale))
            all_evals[row.name] = ev
            records.append(rec)
    extra = [c for c in ("rand_lambda_max", "num_traps", "rand_distance")
             if randomize] + [c for r in records for c in r if c not in COLUMNS]
    cols = list(COLUMNS) + list(dict.fromkeys(c for c in extra if c not in COLUMNS))
    table = pd.DataFrame.from_records(records, columns=cols)
    return SpectraResult("spectra", table, summary=summarize(table), settings=settings,
                         evals=all_evals)
