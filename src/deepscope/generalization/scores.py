"""How well does a complexity measure predict the generalization gap over a set of models?

- :func:`kendall_tau`: Kendall's rank correlation τ_b between a measure and the gap over all
  models (``scipy.stats.kendalltau``, variant ``b``: ties handled).
- :func:`granulated_psi`: Jiang, Neyshabur, Mobahi, Krishnan & Bengio, "Fantastic
  generalization measures and where to find them" (ICLR 2020), Eq. 3. For each
  hyper-parameter ``i``, the models are split into groups in which every OTHER
  hyper-parameter (and every ``fixed`` column, e.g. the seed) takes one value, so the models
  of a group differ only in ``i``; ``ψ_i`` = mean over groups of τ(measure, gap) within the
  group; ``Ψ`` = mean over hyper-parameters of ``ψ_i``. Groups with fewer than two models or
  an undefined τ (a constant measure or gap inside the group) are left out of the mean.
- :func:`conditional_mi`: the PGDL competition score (Jiang et al., "NeurIPS 2020
  competition: predicting generalization in deep learning", 2020; Sec. 2.3 of "Fantastic
  ..."), see its docstring for the exact formula.
- :func:`kfold_r2`: k-fold cross-validated R² and adjusted R² of a linear regression (Jiang,
  Krishnan, Mobahi & Bengio, ICLR 2019, Sec. 4: margin signature -> gap).
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepscope.errors import ConfigError, ShapeError

__all__ = ["kendall_tau", "granulated_psi", "conditional_mi", "kfold_indices", "fit_linear",
           "kfold_r2", "score_measures"]


def _vec(x, name: str) -> np.ndarray:
    try:
        v = np.asarray(x, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected numbers, got {type(x).__name__}") from None
    return v


def kendall_tau(measure, gap) -> float:
    """Kendall's τ_b between ``measure`` and ``gap`` (pairs with a NaN are dropped).

    NaN when fewer than two complete pairs remain or either side is constant.
    """
    from scipy.stats import kendalltau
    m, g = _vec(measure, "measure"), _vec(gap, "gap")
    if m.shape != g.shape:
        raise ShapeError(f"measure has {m.size} values, gap {g.size}")
    ok = np.isfinite(m) & np.isfinite(g)
    m, g = m[ok], g[ok]
    if m.size < 2 or np.ptp(m) == 0 or np.ptp(g) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(kendalltau(m, g, variant="b").statistic)


def _check_columns(table: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"expected a pandas DataFrame of models, got {type(table).__name__}")
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ConfigError(f"{what}: column(s) {', '.join(map(repr, missing))} not in the "
                          f"table (columns: {', '.join(map(str, table.columns))})")


def _keys(table: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Hashable, comparable versions of hyper-parameter columns (lists/tuples -> repr)."""
    return pd.DataFrame({c: table[c].map(lambda v: repr(v) if isinstance(v, (list, tuple,
                                                                               dict)) else v)
                         for c in cols}, index=table.index)


def granulated_psi(table: pd.DataFrame, measure: str, gap: str = "gap",
                   hyperparams: Sequence[str] = (), *, fixed: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """Granulated Kendall coefficient Ψ (Jiang et al. 2020, Eq. 3).

    Args:
        table: one row per model.
        measure, gap: column names.
        hyperparams: the hyper-parameter columns scored (``ψ_i`` for each).
        fixed: columns held fixed inside every group but not scored (e.g. the seed).

    Returns:
        ``{"psi": Ψ, "per_hyperparam": {i: ψ_i}, "groups": {i: number of groups used}}``;
        ``ψ_i`` is NaN when no group of ``i`` has a defined τ, Ψ the mean of the defined ones.
    """
    hyperparams, fixed = list(hyperparams), list(fixed)
    if not hyperparams:
        raise ConfigError("granulated_psi: expected at least one hyper-parameter column")
    _check_columns(table, [measure, gap, *hyperparams, *fixed], "granulated_psi")
    keys = _keys(table, hyperparams + fixed)
    per, counts = {}, {}
    for hp in hyperparams:
        others = [c for c in hyperparams + fixed if c != hp]
        taus = []
        if others:
            groups = keys.groupby(others if len(others) > 1 else others[0], dropna=False,
                                  sort=False).indices
        else:
            groups = {(): np.arange(len(keys))}
        for pos in groups.values():
            idx = keys.index[pos]
            if len(idx) < 2 or keys.loc[idx, hp].nunique(dropna=False) < 2:
                continue
            t = kendall_tau(table.loc[idx, measure], table.loc[idx, gap])
            if math.isfinite(t):
                taus.append(t)
        per[hp] = float(np.mean(taus)) if taus else float("nan")
        counts[hp] = len(taus)
    vals = [v for v in per.values() if math.isfinite(v)]
    return {"psi": float(np.mean(vals)) if vals else float("nan"), "per_hyperparam": per,
            "groups": counts}


def _codes(values: pd.Series) -> np.ndarray:
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64)


def conditional_mi(table: pd.DataFrame, measure: str, gap: str = "gap",
                   hyperparams: Sequence[str] = (), *, size: int = 2) -> dict[str, Any]:
    """PGDL conditional-mutual-information score of a measure (Jiang et al. 2020).

    Over all ordered pairs of distinct models ``(a, b)`` whose gaps differ (tied gaps have no
    sign and are dropped) and whose measures are finite::

        V_g = sign(g_a - g_b) ∈ {-1, +1},     V_μ = sign(μ_a - μ_b) ∈ {-1, 0, +1},
        U_S = (θ_a[h], θ_b[h] for h in S)      (the hyper-parameter values of both models),

    with probabilities the pair frequencies (``p(u)`` = share of pairs in cell ``u``)::

        I(V_μ; V_g | U_S) = Σ_u p(u) Σ_{v,w} p(v,w|u) log2[ p(v,w|u) / (p(v|u) p(w|u)) ]
        H(V_g | U_S)      = -Σ_u p(u) Σ_w p(w|u) log2 p(w|u)
        Î_S = I(V_μ; V_g | U_S) / H(V_g | U_S)
        score = min over S ⊆ hyperparams with |S| = size of Î_S

    (``size=2``: pairs of hyper-parameters, as in the competition; ``size=0``: the plain
    normalized mutual information). Î_S is in [0, 1]; 1 when sign(Δμ) determines sign(Δg) in
    every cell (e.g. μ = g), 0 when they are conditionally independent. S with
    ``H(V_g | U_S) = 0`` (the gap's order is fixed by S alone) has an undefined Î_S and is
    skipped. The competition's scoring program averages cells with equal weights; this
    function weights them by ``p(u)``, as the formula of the paper does.

    Returns:
        ``{"cmi": score, "argmin": "h1,h2", "per_set": {"h1,h2": Î_S}, "pairs": count}``.
    """
    hyperparams = list(hyperparams)
    _check_columns(table, [measure, gap, *hyperparams], "conditional_mi")
    if not isinstance(size, int) or size < 0:
        raise ConfigError(f"size must be an integer >= 0, got {size!r}")
    size = min(size, len(hyperparams))
    m = _vec(table[measure], "measure")
    g = _vec(table[gap], "gap")
    ok = np.isfinite(m) & np.isfinite(g)
    m, g = m[ok], g[ok]
    keys = _keys(table.loc[ok], hyperparams)
    codes = {h: _codes(keys[h]) for h in hyperparams}
    n = m.size
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a, b = a.ravel(), b.ravel()
    keep = (a != b) & (g[a] != g[b])
    a, b = a[keep], b[keep]
    out: dict[str, Any] = {"cmi": float("nan"), "argmin": None, "per_set": {},
                           "pairs": int(a.size)}
    if a.size == 0:
        return out
    vg = (g[a] > g[b]).astype(np.int64)                       # 0: -, 1: +
    vm = (np.sign(m[a] - m[b]) + 1).astype(np.int64)          # 0: -, 1: 0, 2: +
    for subset in itertools.combinations(hyperparams, size):
        cell = np.zeros(a.size, dtype=np.int64)
        for h in subset:
            c = codes[h]
            k = int(c.max()) + 1
            cell = (cell * k + c[a]) * k + c[b]
        cell = pd.factorize(cell)[0]
        n_cells = int(cell.max()) + 1
        joint = np.bincount((cell * 2 + vg) * 3 + vm, minlength=n_cells * 6
                            ).reshape(n_cells, 2, 3).astype(float)
        mi, h = _cmi_from_counts(joint)
        name = ",".join(subset)
        out["per_set"][name] = mi / h if h > 0 else float("nan")
    vals = {k: v for k, v in out["per_set"].items() if math.isfinite(v)}
    if vals:
        best = min(vals, key=vals.get)
        out["cmi"], out["argmin"] = float(vals[best]), best
    return out


def _cmi_from_counts(joint: np.ndarray) -> tuple[float, float]:
    """(I(V_μ; V_g | U), H(V_g | U)) in bits from counts ``joint[u, v_g, v_μ]``."""
    total = joint.sum()
    pu = joint.sum(axis=(1, 2)) / total
    mi = h = 0.0
    for u in range(joint.shape[0]):
        nu = joint[u].sum()
        if nu == 0:
            continue
        pj = joint[u] / nu
        pg = pj.sum(1)
        pm = pj.sum(0)
        nz = pj > 0
        mi += pu[u] * float(np.sum(pj[nz] * np.log2(pj[nz] / np.outer(pg, pm)[nz])))
        h -= pu[u] * float(np.sum(pg[pg > 0] * np.log2(pg[pg > 0])))
    return max(mi, 0.0), h


# ----------------------------------------------------------------------------- regression

def kfold_indices(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """k test folds: a permutation of ``range(n)`` from ``default_rng(seed)``, split with
    ``np.array_split`` (sizes differ by at most one)."""
    if not isinstance(k, int) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}")
    if n < k:
        raise ConfigError(f"{k}-fold cross-validation needs at least {k} models, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


def fit_linear(X, y, *, ridge: float = 0.0) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Least squares ``y ≈ b + X w`` -> ``(b, w, mean, scale)``.

    Features are standardized (column mean ``mean``, population std ``scale``; constant
    columns get scale 1) and ``ridge`` penalizes ``α ||w_std||²`` on the standardized
    coefficients (0: ordinary least squares, minimum-norm solution via ``lstsq``). The
    returned ``w`` is on the raw feature scale: ``predict = b + X @ w``.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.size:
        raise ShapeError(f"X must be (n, p) with n = len(y) = {y.size}, got {X.shape}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ConfigError("fit_linear: features and targets must be finite (drop NaN rows)")
    if ridge < 0:
        raise ConfigError(f"ridge must be >= 0, got {ridge}")
    mean = X.mean(0)
    scale = X.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    Z = (X - mean) / scale
    yc = y - y.mean()
    if ridge > 0:
        w_std = np.linalg.solve(Z.T @ Z + ridge * np.eye(Z.shape[1]), Z.T @ yc)
    else:
        w_std = np.linalg.lstsq(Z, yc, rcond=None)[0]
    w = w_std / scale
    b = float(y.mean() - mean @ w)
    return b, w, mean, scale


def kfold_r2(X, y, *, k: int = 5, seed: int = 0, ridge: float = 0.0) -> dict[str, Any]:
    """k-fold cross-validated R² of :func:`fit_linear`.

    Every model is predicted by the fit on the other folds; with these out-of-fold
    predictions ``ŷ``: ``R² = 1 - Σ(y - ŷ)² / Σ(y - ȳ)²`` and the adjusted
    ``R²_adj = 1 - (1 - R²)(n - 1)/(n - p - 1)`` (NaN when ``n <= p + 1``). ``r2_train`` is the
    in-sample R² of the fit on all models.

    Returns:
        ``{"r2", "adj_r2", "r2_train", "adj_r2_train", "oof": ŷ, "folds": k, "n", "p"}``.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.size:
        raise ShapeError(f"X must be (n, p) with n = len(y) = {y.size}, got {X.shape}")
    n, p = X.shape
    oof = np.empty(n)
    for test in kfold_indices(n, k, seed):
        train = np.setdiff1d(np.arange(n), test)
        b, w, _, _ = fit_linear(X[train], y[train], ridge=ridge)
        oof[test] = b + X[test] @ w
    b, w, _, _ = fit_linear(X, y, ridge=ridge)
    ss_tot = float(((y - y.mean()) ** 2).sum())

    def r2(pred):
        return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")

    def adj(r):
        return 1.0 - (1.0 - r) * (n - 1) / (n - p - 1) if n - p - 1 > 0 else float("nan")

    r_cv, r_tr = r2(oof), r2(b + X @ w)
    return {"r2": r_cv, "adj_r2": adj(r_cv), "r2_train": r_tr, "adj_r2_train": adj(r_tr),
            "oof": oof, "folds": k, "n": n, "p": p}


# ----------------------------------------------------------------------------- all at once

def score_measures(table: pd.DataFrame, measures: Sequence[str] | Mapping[str, str],
                   gap: str = "gap", hyperparams: Sequence[str] = (), *,
                   fixed: Sequence[str] = (), cmi_size: int = 2) -> pd.DataFrame:
    """One row per measure: ``measure, n, tau, psi, cmi, cmi_argmin`` and ``psi.<hp>``.

    ``measures`` lists columns of ``table`` (or maps a display name to a column).
    Without hyper-parameters Ψ and CMI are NaN.
    """
    items = (list(measures.items()) if isinstance(measures, Mapping)
             else [(m, m) for m in measures])
    rows = []
    for name, col in items:
        _check_columns(table, [col, gap], "score_measures")
        ok = np.isfinite(_vec(table[col], col)) & np.isfinite(_vec(table[gap], gap))
        row: dict[str, Any] = {"measure": name, "n": int(ok.sum()),
                               "tau": kendall_tau(table[col], table[gap])}
        if hyperparams:
            psi = granulated_psi(table, col, gap, hyperparams, fixed=fixed)
            cmi = conditional_mi(table, col, gap, hyperparams, size=cmi_size)
            row.update(psi=psi["psi"], cmi=cmi["cmi"], cmi_argmin=cmi["argmin"])
            row.update({f"psi.{h}": v for h, v in psi["per_hyperparam"].items()})
        else:
            row.update(psi=float("nan"), cmi=float("nan"), cmi_argmin=None)
        rows.append(row)
    return pd.DataFrame(rows)
