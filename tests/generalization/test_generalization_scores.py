"""Kendall τ, granulated Ψ, the PGDL CMI score and k-fold R² against slow references, scipy,
scikit-learn and synthetic measures with known relationships."""
import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from deepscope.errors import ConfigError, ShapeError
from deepscope.generalization.scores import (conditional_mi, fit_linear, granulated_psi,
                                             kendall_tau, kfold_indices, kfold_r2,
                                             score_measures)


def _grid(levels=(3, 3, 3), seeds=2, noise=0.05, seed=0):
    """Full grid over hyper-parameters a, b, c (x seeds) with gap = a + 2b + 0.5c + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for a, b, c in itertools.product(*(range(n) for n in levels)):
        for s in range(seeds):
            rows.append({"a": a, "b": b, "c": c, "seed": s})
    t = pd.DataFrame(rows)
    t["gap"] = t["a"] + 2 * t["b"] + 0.5 * t["c"] + noise * rng.standard_normal(len(t))
    return t


# ----------------------------------------------------------------------------- tau

def test_kendall_tau_known_values_and_scipy():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(50)
    assert kendall_tau(np.exp(g), g) == pytest.approx(1.0)
    assert kendall_tau(-g ** 3, g) == pytest.approx(-1.0)
    m = np.round(g + rng.standard_normal(50), 1)  # ties: tau-b
    assert kendall_tau(m, g) == pytest.approx(kendalltau(m, g, variant="b").statistic,
                                              abs=1e-12)
    big = rng.standard_normal((2, 2000))
    assert abs(kendall_tau(big[0], big[1])) < 0.05
    m2 = m.copy()
    m2[:5] = np.nan
    assert kendall_tau(m2, g) == pytest.approx(kendalltau(m[5:], g[5:]).statistic)
    assert math.isnan(kendall_tau(np.ones(5), np.arange(5)))
    assert math.isnan(kendall_tau([1.0], [2.0]))
    with pytest.raises(ShapeError):
        kendall_tau([1, 2, 3], [1, 2])


# ----------------------------------------------------------------------------- psi

def _ref_psi(t, measure, hps, fixed=()):
    per = {}
    for hp in hps:
        others = [c for c in list(hps) + list(fixed) if c != hp]
        groups = defaultdict(list)
        for i, row in t.iterrows():
            groups[tuple(row[o] for o in others)].append(i)
        taus = []
        for idx in groups.values():
            sub = t.loc[idx]
            if len(idx) < 2 or sub[hp].nunique() < 2:
                continue
            if sub[measure].nunique() < 2 or sub["gap"].nunique() < 2:
                continue
            taus.append(kendalltau(sub[measure], sub["gap"]).statistic)
        per[hp] = np.mean(taus) if taus else np.nan
    vals = [v for v in per.values() if np.isfinite(v)]
    return np.mean(vals), per


def test_psi_against_reference_and_known_cases():
    t = _grid()
    rng = np.random.default_rng(1)
    t["noisy"] = t["gap"] + rng.standard_normal(len(t))
    for fixed in ((), ("seed",)):
        got = granulated_psi(t, "noisy", "gap", ["a", "b", "c"], fixed=fixed)
        want, per = _ref_psi(t, "noisy", ["a", "b", "c"], fixed)
        assert got["psi"] == pytest.approx(want, abs=1e-12)
        for hp in "abc":
            assert got["per_hyperparam"][hp] == pytest.approx(per[hp], abs=1e-12)
    # the gap itself: tau 1 in every group
    assert granulated_psi(t, "gap", "gap", ["a", "b", "c"])["psi"] == pytest.approx(1.0)
    # a measure that tracks only a: psi_a = 1, constant inside b- and c-groups -> undefined
    t["only_a"] = t["a"]
    r = granulated_psi(t, "only_a", "gap", ["a", "b", "c"], fixed=("seed",))
    assert r["per_hyperparam"]["a"] == pytest.approx(1.0)
    assert math.isnan(r["per_hyperparam"]["b"]) and r["groups"]["b"] == 0
    # groups: 9 (b, c) values x 2 seeds for hyper-parameter a
    assert r["groups"]["a"] == 18
    with pytest.raises(ConfigError, match="not in the table"):
        granulated_psi(t, "nope", "gap", ["a"])
    with pytest.raises(ConfigError, match="at least one"):
        granulated_psi(t, "gap", "gap", [])


# ----------------------------------------------------------------------------- cmi

def _ref_cmi(t, measure, hps, size=2):
    """Slow: count (cell, sign gap, sign measure) over ordered pairs; formula of the docstring."""
    m, g = t[measure].to_numpy(float), t["gap"].to_numpy(float)
    rows = t[list(hps)].to_numpy()
    best = np.inf
    per = {}
    for S in itertools.combinations(range(len(hps)), size):
        cnt = Counter()
        for a in range(len(t)):
            for b in range(len(t)):
                if a == b or g[a] == g[b]:
                    continue
                u = tuple((rows[a][s], rows[b][s]) for s in S)
                cnt[(u, int(np.sign(g[a] - g[b])), int(np.sign(m[a] - m[b])))] += 1
        total = sum(cnt.values())
        cells = defaultdict(Counter)
        for (u, vg, vm), c in cnt.items():
            cells[u][(vg, vm)] += c
        mi = h = 0.0
        for u, c in cells.items():
            nu = sum(c.values())
            pu = nu / total
            pg, pm = Counter(), Counter()
            for (vg, vm), k in c.items():
                pg[vg] += k / nu
                pm[vm] += k / nu
            for (vg, vm), k in c.items():
                p = k / nu
                mi += pu * p * math.log2(p / (pg[vg] * pm[vm]))
            h -= pu * sum(p * math.log2(p) for p in pg.values() if p > 0)
        val = mi / h if h > 0 else np.nan
        per[",".join(hps[s] for s in S)] = val
        if np.isfinite(val):
            best = min(best, val)
    return best, per


def test_cmi_against_reference():
    t = _grid(levels=(2, 3, 2), seeds=2)
    rng = np.random.default_rng(2)
    t["noisy"] = np.round(t["gap"] + rng.standard_normal(len(t)), 1)  # ties -> sign 0
    for size in (0, 1, 2):
        got = conditional_mi(t, "noisy", "gap", ["a", "b", "c"], size=size)
        want, per = _ref_cmi(t, "noisy", ["a", "b", "c"], size)
        assert got["cmi"] == pytest.approx(want, abs=1e-12)
        for k, v in per.items():
            assert got["per_set"][k] == pytest.approx(v, abs=1e-12)


def test_cmi_known_cases():
    t = _grid(levels=(3, 3, 3), seeds=2)
    # the gap itself: sign(Δμ) = sign(Δg) everywhere -> 1
    r = conditional_mi(t, "gap", "gap", ["a", "b", "c"])
    assert r["cmi"] == pytest.approx(1.0)
    assert set(r["per_set"]) == {"a,b", "a,c", "b,c"}
    # pure noise: ~0 (the plug-in estimate's bias shrinks with the pairs per cell)
    big = _grid(levels=(3, 3, 3), seeds=8)
    big["noise"] = np.random.default_rng(3).standard_normal(len(big))
    assert conditional_mi(big, "noise", "gap", ["a", "b", "c"])["cmi"] < 0.01
    # a measure tracking only hyper-parameter a: informative until a is conditioned on,
    # then sign(Δμ) is constant inside every cell -> exactly 0
    t["only_a"] = t["a"] + 0.0
    r = conditional_mi(t, "only_a", "gap", ["a", "b", "c"])
    assert r["cmi"] == 0.0 and "a" in r["argmin"].split(",")
    assert r["per_set"]["a,b"] == 0.0 and r["per_set"]["a,c"] == 0.0
    assert r["per_set"]["b,c"] > 0.2
    # with a single conditioning hyper-parameter: only {a} kills it
    r1 = conditional_mi(t, "only_a", "gap", ["a", "b", "c"], size=1)
    assert r1["per_set"]["a"] == 0.0 and r1["per_set"]["b"] > 0 and r1["per_set"]["c"] > 0
    with pytest.raises(ConfigError, match="size"):
        conditional_mi(t, "gap", "gap", ["a"], size=-1)


# ----------------------------------------------------------------------------- regression

def test_kfold_r2_against_sklearn():
    from sklearn.linear_model import LinearRegression, Ridge
    rng = np.random.default_rng(4)
    n, p = 60, 20
    X = rng.standard_normal((n, p)) * rng.uniform(0.1, 5, p) + rng.uniform(-3, 3, p)
    w = rng.standard_normal(p)
    y = X @ w + 0.7 + 0.01 * rng.standard_normal(n)
    r = kfold_r2(X, y, k=5, seed=3)
    assert r["r2"] > 0.999 and r["adj_r2"] > 0.99 and r["r2_train"] > 0.999
    folds = kfold_indices(n, 5, 3)
    assert sorted(np.concatenate(folds)) == list(range(n))
    assert {len(f) for f in folds} == {12}
    oof = np.empty(n)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        oof[test] = LinearRegression().fit(X[train], y[train]).predict(X[test])
    np.testing.assert_allclose(r["oof"], oof, rtol=1e-8, atol=1e-10)
    r2 = 1 - ((y - oof) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r["r2"] == pytest.approx(r2, abs=1e-12)
    assert r["adj_r2"] == pytest.approx(1 - (1 - r2) * (n - 1) / (n - p - 1), abs=1e-12)
    # ridge on standardized features == sklearn Ridge after StandardScaler
    b, wr, mean, scale = fit_linear(X, y, ridge=3.0)
    Z = (X - X.mean(0)) / X.std(0)
    sk = Ridge(alpha=3.0).fit(Z, y)
    np.testing.assert_allclose(b + X @ wr, sk.predict(Z), rtol=1e-9, atol=1e-9)
    # noise features: the cross-validated R² is poor while the in-sample one is not
    yn = rng.standard_normal(n)
    rn = kfold_r2(X, yn, k=5)
    assert rn["r2"] < 0.2 < rn["r2_train"]
    with pytest.raises(ConfigError):
        kfold_indices(3, 5)
    with pytest.raises(ConfigError):
        kfold_r2(X, y, k=1)
    with pytest.raises(ShapeError):
        kfold_r2(X, y[:-1])
    with pytest.raises(ConfigError, match="finite"):
        fit_linear(np.full((4, 2), np.nan), np.ones(4))


def test_score_measures_table():
    t = _grid(levels=(2, 2, 3), seeds=2)
    t["m"] = t["gap"] * 2
    out = score_measures(t, {"double": "m", "gap_itself": "gap"}, "gap", ["a", "b", "c"],
                         fixed=["seed"])
    assert list(out["measure"]) == ["double", "gap_itself"]
    assert {"measure", "n", "tau", "psi", "cmi", "cmi_argmin", "psi.a", "psi.b",
            "psi.c"} <= set(out.columns)
    np.testing.assert_allclose(out[["tau", "psi", "cmi"]].to_numpy(), 1.0)
    assert (out["n"] == len(t)).all()
    plain = score_measures(t, ["m"], "gap")
    assert math.isnan(plain["psi"].iloc[0]) and plain["tau"].iloc[0] == pytest.approx(1.0)
