"""The inverse-stability experiment: envelope fit (against brute force) and a tiny run."""
import numpy as np
import pytest

from deepscope.errors import ConfigError
from deepscope.experiments.inverse_stability import (STUDY_COLUMNS, envelope_fit,
                                                     inverse_stability_study)


def brute_envelope(r, p):
    """Grid over beta (coarse, then fine); the tightest intercept a(beta) = max(v - beta u)
    for each; the line lowest at the mean of u."""
    u, v = np.log(r), np.log(p)

    def best(betas):
        a = np.max(v[None, :] - betas[:, None] * u[None, :], axis=1)
        i = int(np.argmin(a + betas * u.mean()))
        return a[i], betas[i]

    _, b0 = best(np.linspace(0, 4, 4001))
    a, beta = best(np.linspace(max(0.0, b0 - 2e-3), b0 + 2e-3, 40001))
    return np.exp(a), beta


@pytest.mark.parametrize("seed", [0, 1])
def test_envelope_fit_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    r = np.exp(rng.uniform(-6, 0, 30))
    p = 2.0 * r ** 0.7 * rng.uniform(0.2, 1.0, 30)
    fit = envelope_fit(r, p)
    C, beta = brute_envelope(r, p)
    assert fit["beta"] == pytest.approx(beta, abs=2e-5)
    assert fit["C"] == pytest.approx(C, rel=1e-4)
    assert np.all(p <= fit["C"] * r ** fit["beta"] * (1 + 1e-9))  # an upper bound
    assert 0.5 < fit["beta"] < 0.9 and fit["C"] <= 2.0 + 1e-9
    assert fit["slope_ls"] == pytest.approx(np.polyfit(np.log(r), np.log(p), 1)[0])


def test_envelope_fit_exact_power_law_and_errors():
    r = np.array([1e-3, 1e-2, 1e-1, 1.0])
    fit = envelope_fit(r, 3 * r ** 0.5)
    assert fit["beta"] == pytest.approx(0.5, abs=1e-9) and fit["C"] == pytest.approx(3.0)
    with pytest.raises(ConfigError):
        envelope_fit([1.0, 1.0], [1.0, 2.0])


def test_tiny_study():
    res = inverse_stability_study(bases=1, seed_pairs=1, perturbations=(1e-3, 1e-2, 1e-1),
                                  width=8, n_train=64, epochs=30, retrain_epochs=3,
                                  samples=400, strengths=(10.0, 1000.0), progress=False)
    t = res.table
    assert list(t.columns) == list(STUDY_COLUMNS)
    trained, inj = t[t["group"] == "trained"], t[t["group"] == "injected"]
    assert len(trained) == 4 and len(inj) == 5 * 2
    fit = res.summary["fit"]
    # the bound holds for every trained pair and is tight for at least one
    assert (trained["ratio"] <= 1 + 1e-9).all()
    assert trained["ratio"].max() == pytest.approx(1.0, rel=1e-9)
    assert np.allclose(trained["param_distance"],
                       trained["ratio"] * fit["C"] * trained["sup"] ** fit["beta"])
    # every injection keeps the realization (sup) nearly fixed and is detected
    assert (inj["sup"] < 1e-7).all()
    assert inj["detected"].astype(bool).all()
    per = res.summary["injections"]
    for kind in ("opposite", "parallel", "vanishing_outer", "dead"):
        assert per[kind]["broken_fraction"] == 1.0, kind
    # rescaling is removed by the canonicalization: only the raw distance moves
    assert per["unbalanced"]["broken_fraction"] == 0.0
    assert per["unbalanced"]["broken_fraction_raw"] == 1.0
    # stronger injections move the parameters further
    for kind in ("opposite", "parallel", "dead"):
        g = inj[inj["kind"] == kind].sort_values("strength")
        assert g["param_distance"].iloc[-1] > g["param_distance"].iloc[0]


def test_study_rejects_bad_settings():
    with pytest.raises(ConfigError):
        inverse_stability_study(injections=("nope",), progress=False)
    with pytest.raises(ConfigError):
        inverse_stability_study(strengths=(0.5,), progress=False)
    with pytest.raises(ConfigError):
        inverse_stability_study(fit_on="l2", progress=False)


def test_study_is_reproducible():
    kw = dict(bases=1, seed_pairs=1, perturbations=(0.01,), width=4, n_train=16, epochs=2,
              batch_size=8,
              retrain_epochs=1, samples=64, strengths=(10.0,), injections=("dead",),
              progress=False)
    a, b = inverse_stability_study(**kw), inverse_stability_study(**kw)
    assert a.table.equals(b.table)
    c = inverse_stability_study(**{**kw, "seed": 1})
    assert not np.allclose(c.table["param_distance"], a.table["param_distance"])
