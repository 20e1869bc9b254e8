"""Linear centered kernel alignment (CKA) between layer representations.

Kornblith, Norouzi, Lee & Hinton, "Similarity of neural network representations revisited"
(ICML 2019). For activations X (n x p) and Y (n x q) of the same n inputs, with linear kernels
K = X Xᵀ, L = Y Yᵀ and H = I − 11ᵀ/n:

- biased (standard) estimator: HSIC₀(K, L) = tr(KHLH)/(n−1)², and
  CKA = HSIC₀(K, L) / sqrt(HSIC₀(K, K) HSIC₀(L, L)) = ||Ycᵀ Xc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F)
  with column-centered Xc, Yc;
- unbiased estimator (``unbiased=True``): HSIC₁ of Song, Smola, Gretton, Bedo & Borgwardt,
  "Feature selection via dependence maximization" (JMLR 2012), as used by Nguyen, Raghu &
  Kornblith, "Do wide and deep networks learn the same things?" (ICLR 2021): with K̃, L̃ the
  kernel matrices with zeroed diagonals,
  HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) 1ᵀK̃L̃1] / (n(n−3)),  n ≥ 4.
  It is invariant to centering; on centered features it reduces to
  ||XcᵀYc||² − n/(n−2) Σᵢ kᵢᵢ lᵢᵢ + tr K tr L/((n−1)(n−2)) (up to the 1/(n(n−3)) that cancels).

Everything is computed in float64, from feature products when a layer has at most n features
and from n x n Gram matrices otherwise (whichever is cheaper).

Degenerate inputs. A representation with zero variance (every row the same, e.g. a dead ReLU
layer), or whose unbiased self-HSIC is not positive, has no defined CKA (0/0).
:func:`linear_cka` raises :class:`DataError` with the reason by default
(``on_degenerate="nan"`` returns NaN instead); :func:`cka` puts NaN in that cell of the matrix
and the reason in the table's ``note`` column, never a silent NaN.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, DataError, ShapeError
from deepscope.representations.activations import capture_activations, resolve_data
from deepscope.result import Result
from deepscope._precision import ieee_float32

__all__ = ["linear_cka", "cka", "CKAResult", "CKA_COLUMNS"]

#: Table columns of :class:`CKAResult`, in order (names never change).
CKA_COLUMNS = ("layer_a", "layer_b", "i", "j", "dim_a", "dim_b", "cka", "note")
_ZERO_VAR = 1e-12  # relative: ||Xc||_F <= 1e-12 ||X||_F counts as zero variance


@dataclass
class _Rep:
    """One centered representation, as features (n x p, p <= n) or as a Gram matrix."""

    name: str
    dim: int
    feats: Tensor | None
    gram: Tensor | None
    diag: Tensor          # k_ii = ||xc_i||²
    trace: float          # tr K
    self_biased: float    # ||Kc||_F² = ||XcᵀXc||_F²
    problem: str | None   # why CKA is undefined for this representation (None: fine)


def _as_matrix(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ConfigError(f"{name} must be a tensor or an array, got {type(x).__name__}")
    if x.dim() < 2:
        raise ShapeError(f"{name} must have shape (n, features...), got {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{name} contains NaN or infinite values")
    return x


def _inner(a: _Rep, b: _Rep) -> float:
    """<Kc, Lc> = ||XcᵀYc||²_F from whichever forms the two representations have."""
    if a.feats is not None and b.feats is not None:
        return float((a.feats.T @ b.feats).pow(2).sum())
    if a.gram is not None and b.gram is not None:
        return float((a.gram * b.gram).sum())
    f, g = (a.feats, b.gram) if a.feats is not None else (b.feats, a.gram)
    return float((f * (g @ f)).sum())


def _prepare(x: Tensor, name: str, unbiased: bool) -> _Rep:
    n, p = x.shape
    if not bool(torch.isfinite(x).all()):  # e.g. NaN weights: a noted NaN, never a silent one
        return _Rep(name, p, None, None, torch.zeros(n, dtype=x.dtype, device=x.device),
                    math.nan, math.nan,
                    f"{name}: contains NaN or infinite values (non-finite weights or inputs?)")
    xc = x - x.mean(0, keepdim=True)
    scale = float(x.norm())
    norm_c = float(xc.norm())
    diag = xc.pow(2).sum(1)
    trace = float(diag.sum())
    problem = None
    if norm_c == 0.0 or norm_c <= _ZERO_VAR * scale:
        problem = f"{name}: zero variance (every sample has the same representation)"
    if p <= n:
        rep = _Rep(name, p, xc, None, diag, trace, 0.0, problem)
    else:
        rep = _Rep(name, p, None, xc @ xc.T, diag, trace, 0.0, problem)
    rep.self_biased = _inner(rep, rep)
    if problem is None and unbiased and _hsic1(rep, rep, rep.self_biased, n) <= 0.0:
        rep.problem = (f"{name}: unbiased HSIC(X, X) <= 0 (too few samples for the "
                       f"unbiased estimator)")
    return rep


def _hsic1(a: _Rep, b: _Rep, inner: float, n: int) -> float:
    """n(n−3)·HSIC₁ on centered features (Song et al. 2012, the reduction in the docstring)."""
    return (inner - n / (n - 2) * float(a.diag @ b.diag)
            + a.trace * b.trace / ((n - 1) * (n - 2)))


def _cka_pair(a: _Rep, b: _Rep, n: int, unbiased: bool, same: bool = False
              ) -> tuple[float, str | None]:
    problem = a.problem or b.problem
    if problem is not None:
        return math.nan, problem
    inner = a.self_biased if same else _inner(a, b)
    if not unbiased:
        return inner / math.sqrt(a.self_biased * b.self_biased), None
    hxy = _hsic1(a, b, inner, n)
    hxx = _hsic1(a, a, a.self_biased, n)
    hyy = _hsic1(b, b, b.self_biased, n)
    return hxy / math.sqrt(hxx * hyy), None


def _check_unbiased(unbiased, n: int) -> bool:
    if not isinstance(unbiased, bool):
        raise ConfigError(f"unbiased must be True or False, got {unbiased!r}")
    if unbiased and n < 4:
        raise DataError(f"the unbiased HSIC estimator needs at least 4 samples, got {n}")
    if n < 2:
        raise DataError(f"CKA needs at least 2 samples, got {n}")
    return unbiased


def linear_cka(x, y, *, unbiased: bool = False, on_degenerate: str = "raise") -> float:
    """Linear CKA between two activation matrices of the same n inputs (module docstring).

    Args:
        x, y: ``(n, ...)`` tensors or arrays (flattened per sample; float64 inside).
        unbiased: the unbiased HSIC estimator (n >= 4) instead of the biased one.
        on_degenerate: ``"raise"`` (DataError with the reason) or ``"nan"`` when CKA is
            undefined (zero-variance input, non-positive unbiased self-HSIC).
    """
    if on_degenerate not in ("raise", "nan"):
        raise ConfigError(f"on_degenerate must be 'raise' or 'nan', got {on_degenerate!r}")
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"x and y must hold the same samples: {x.shape[0]} vs {y.shape[0]} rows")
    n = int(x.shape[0])
    _check_unbiased(unbiased, n)
    if y.device != x.device:
        y = y.to(x.device)
    value, problem = _cka_pair(_prepare(x, "x", unbiased), _prepare(y, "y", unbiased), n,
                               unbiased)
    if problem is not None and on_degenerate == "raise":
        raise DataError(f"CKA is undefined: {problem}")
    return value


@dataclass(repr=False)
class CKAResult(Result):
    """:class:`~deepscope.result.Result` of :func:`cka`; ``matrix`` is the layer-by-layer grid."""

    @property
    def matrix(self) -> pd.DataFrame:
        """CKA values with ``layer_a`` rows and ``layer_b`` columns, in layer order."""
        t = self.table
        rows = list(dict.fromkeys(t.sort_values("i")["layer_a"]))
        cols = list(dict.fromkeys(t.sort_values("j")["layer_b"]))
        return t.pivot(index="layer_a", columns="layer_b", values="cka").loc[rows, cols]


def _sample(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


@ieee_float32
def cka(model_a: nn.Module, data, model_b: nn.Module | None = None, layers_a=None,
        layers_b=None, unbiased: bool = False, *, split: str = "train",
        max_samples: int | None = 2048, seed: int = 0, include_input: bool = False,
        batch_size: int = 512, device=None, progress: bool = True) -> CKAResult:
    """Linear CKA between every pair of layers, within one model or between two.

    Args:
        model_a: an ``nn.Module`` (never mutated).
        data: a deepscope Dataset (its ``split``), an ``(x, y)`` pair or a tensor of inputs.
        model_b: a second model fed the same inputs (None: ``model_a`` against itself).
        layers_a, layers_b: capture points of each model (see
            :mod:`deepscope.representations.activations`); None: the defaults;
            ``layers_b`` defaults to ``layers_a`` when both models are the same.
        unbiased: the unbiased HSIC estimator (Song et al. 2012) instead of the biased one.
        split: ``"train"`` or ``"test"``.
        max_samples: a seeded random subset of at most this many inputs (Gram matrices are
            n x n); None uses all.
        seed: seeds that subset.
        include_input: add the raw inputs as a layer ``"input"``.
        batch_size: samples per forward pass; device: where to run (None: model_a's).
        progress: progress bar over layer pairs.

    Returns:
        :class:`CKAResult`: one row per (layer_a, layer_b) pair (``CKA_COLUMNS``); ``note``
        says why a cell is NaN; ``.matrix`` gives the grid.
    """
    if not isinstance(model_a, nn.Module):
        raise ConfigError(f"model_a must be a torch.nn.Module, got {type(model_a).__name__}")
    if model_b is not None and not isinstance(model_b, nn.Module):
        raise ConfigError(f"model_b must be a torch.nn.Module or None, got "
                          f"{type(model_b).__name__}")
    if max_samples is not None and (isinstance(max_samples, bool)
                                    or not isinstance(max_samples, int) or max_samples < 2):
        raise ConfigError(f"max_samples must be an integer >= 2 or None, got {max_samples!r}")
    x, _ = resolve_data(data, split)
    idx = _sample(int(x.shape[0]), max_samples, seed)
    x = x[torch.as_tensor(idx)]
    n = int(x.shape[0])
    _check_unbiased(unbiased, n)
    t0 = time.perf_counter()
    acts_a = capture_activations(model_a, x, layers_a, batch_size=batch_size, device=device,
                                 include_input=include_input)
    within = model_b is None
    if within and layers_b is not None and layers_b != layers_a:
        within = False
    if within:
        acts_b = acts_a
    else:
        acts_b = capture_activations(model_b if model_b is not None else model_a, x,
                                     layers_b, batch_size=batch_size, device=device,
                                     include_input=include_input)
    dev = next(iter(acts_a.values())).device
    reps_a = [_prepare(a.to(torch.float64), k, unbiased) for k, a in acts_a.items()]
    reps_b = reps_a if within else [_prepare(b.to(dev, torch.float64), k, unbiased)
                                   for k, b in acts_b.items()]
    values: dict[tuple[int, int], tuple[float, str | None]] = {}
    pairs = [(i, j) for i in range(len(reps_a)) for j in range(len(reps_b))
             if not within or j >= i]
    for i, j in progress_bar(pairs, enabled=progress, desc="CKA", unit="pair"):
        values[(i, j)] = _cka_pair(reps_a[i], reps_b[j], n, unbiased, same=within and i == j)
        if within:
            values[(j, i)] = values[(i, j)]
    rows = []
    for i, ra in enumerate(reps_a):
        for j, rb in enumerate(reps_b):
            v, note = values[(i, j)]
            rows.append({"layer_a": ra.name, "layer_b": rb.name, "i": i, "j": j,
                         "dim_a": ra.dim, "dim_b": rb.dim, "cka": v, "note": note or ""})
    table = pd.DataFrame(rows, columns=list(CKA_COLUMNS))
    finite = table["cka"].dropna()
    summary = {"n": n, "estimator": "unbiased" if unbiased else "biased",
               "num_layers_a": len(reps_a), "num_layers_b": len(reps_b),
               "between_models": model_b is not None,
               "num_nan": int(table["cka"].isna().sum()),
               "min_cka": float(finite.min()) if len(finite) else math.nan,
               "mean_cka": float(finite.mean()) if len(finite) else math.nan}
    same_names = [r.name for r in reps_a] == [r.name for r in reps_b]
    if model_b is not None and same_names:
        diag = table[table["i"] == table["j"]]["cka"]
        summary["mean_diagonal"] = float(diag.mean()) if diag.notna().any() else math.nan
    summary["time_s"] = time.perf_counter() - t0

    def _names(layers):
        if layers is None:
            return None
        return [str(l) for l in ([layers] if isinstance(layers, (str, type)) else layers)]

    settings = {"layers_a": _names(layers_a), "layers_b": _names(layers_b),
                "unbiased": unbiased, "split": split, "max_samples": max_samples, "seed": seed,
                "include_input": include_input, "batch_size": batch_size,
                "device": None if device is None else str(device)}
    return CKAResult(kind="cka", table=table, summary=summary, settings=settings)
