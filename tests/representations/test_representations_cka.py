"""Linear CKA: against direct formulas (Gram matrices, Song et al.'s estimator, the
U-statistic), invariances, the NaN guard, and the layer-by-layer matrix of models."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, DataError, ShapeError
from deepscope.representations.cka import CKA_COLUMNS, cka, linear_cka
from rep_reference import cka_biased_gram, cka_unbiased, hsic_song, hsic_ustatistic


def pair(rng, n=40, p=6, q=9, noise=1.0):
    x = rng.normal(size=(n, p))
    y = np.tanh(x @ rng.normal(size=(p, q))) + noise * rng.normal(size=(n, q)) + 3.0
    return x, y


@pytest.mark.parametrize("unbiased", [False, True])
def test_self_similarity_is_one(rng, unbiased):
    x, _ = pair(rng)
    assert linear_cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(40, 6, 9), (12, 30, 5), (10, 25, 40)])
def test_biased_matches_centered_gram_formula(rng, shape):
    # feature form (p, q <= n), mixed and Gram form (p, q > n)
    x, y = pair(rng, *shape)
    assert abs(linear_cka(x, y) - cka_biased_gram(x, y)) < 1e-12


def test_song_formula_equals_its_u_statistic(rng):
    # the two references agree with each other (checks the references themselves)
    x, y = pair(rng, n=7, p=3, q=4)
    k, l = x @ x.T, y @ y.T
    assert hsic_song(k, l) == pytest.approx(hsic_ustatistic(k, l), rel=1e-10)


@pytest.mark.parametrize("shape", [(7, 3, 4), (40, 6, 9), (12, 30, 5), (10, 25, 40)])
def test_unbiased_matches_song_estimator(rng, shape):
    x, y = pair(rng, *shape)
    assert abs(linear_cka(x, y, unbiased=True) - cka_unbiased(x, y)) < 1e-10
    if shape[0] == 7:  # and the U-statistic form, from uncentered kernels
        k, l = x @ x.T, y @ y.T
        ref = hsic_ustatistic(k, l) / math.sqrt(hsic_ustatistic(k, k) * hsic_ustatistic(l, l))
        assert abs(linear_cka(x, y, unbiased=True) - ref) < 1e-10


def test_unbiased_differs_from_biased_for_small_n(rng):
    # independent data: the biased estimator is inflated at small n, the unbiased one is not
    x, y = rng.normal(size=(20, 50)), rng.normal(size=(20, 50))
    assert linear_cka(x, y) > 0.5
    assert abs(linear_cka(x, y, unbiased=True)) < 0.2


@pytest.mark.parametrize("unbiased", [False, True])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(rng, unbiased):
    x, y = pair(rng)
    q, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    base = linear_cka(x, y, unbiased=unbiased)
    assert linear_cka(x, y @ q, unbiased=unbiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x * 7.5, y * 0.01, unbiased=unbiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 4.0, y, unbiased=unbiased) == pytest.approx(base, abs=1e-12)


def test_not_invariant_to_general_invertible_maps(rng):
    x, _ = pair(rng)
    a = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, 50.0]) @ rng.normal(size=(6, 6))
    assert np.linalg.matrix_rank(a) == 6
    assert linear_cka(x, x @ a) < 0.9


def test_nan_guard_zero_variance(rng):
    x, _ = pair(rng)
    const = np.ones((40, 5)) * 2.5
    with pytest.raises(DataError, match="zero variance"):
        linear_cka(x, const)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 RuntimeWarning anywhere
        assert math.isnan(linear_cka(x, const, on_degenerate="nan"))
        assert math.isnan(linear_cka(const, x, unbiased=True, on_degenerate="nan"))
    with pytest.raises(DataError, match="at least 4"):
        linear_cka(x[:3], x[:3], unbiased=True)
    with pytest.raises(ShapeError):
        linear_cka(x, x[:10])
    with pytest.raises(ConfigError):
        linear_cka(x, x, on_degenerate="ignore")
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(DataError):
        linear_cka(bad, x)


class Dead(nn.Module):
    """fc -> relu, a layer killed by a large negative bias (all-zero output), -> out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(5, 12)
        self.act = nn.ReLU()
        self.dead = nn.Linear(12, 4)
        self.dead_act = nn.ReLU()
        self.out = nn.Linear(12, 3)
        with torch.no_grad():
            self.dead.bias.fill_(-1e3)

    def forward(self, x):
        h = self.act(self.fc(x))
        self.dead_act(self.dead(h))
        return self.out(h)


def test_matrix_marks_dead_layer_nan_with_a_reason(rng):
    model = Dead()
    x = torch.tensor(rng.normal(size=(30, 5)), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = cka(model, x, progress=False)
    m = res.matrix
    assert list(m.index) == ["fc", "act", "dead", "dead_act", "out"]
    assert m.loc["dead_act"].isna().all() and m["dead_act"].isna().all()
    finite = m.drop(index="dead_act", columns="dead_act")
    assert finite.notna().all().all()
    notes = res.table[res.table["cka"].isna()]["note"]
    assert (notes.str.contains("dead_act: zero variance")).all()
    assert res.summary["num_nan"] == 9
    from deepscope.report.representations import plot_cka
    fig = plot_cka(res)  # NaN cells are drawn hatched, not as numbers
    assert len(fig.axes[0].patches) == 9
    assert len(fig.axes[0].texts) == 25 - 9


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(),
                         nn.Linear(16, 3))


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_within_model_matches_linear_cka(rng, unbiased):
    model = _mlp(0).train()
    x = torch.tensor(rng.normal(size=(50, 8)), dtype=torch.float32)
    before = state_fingerprint(model)
    res = cka(model, (x, torch.zeros(50)), unbiased=unbiased, include_input=True,
              progress=False)
    assert state_fingerprint(model) == before and model.training
    assert tuple(res.table.columns) == CKA_COLUMNS
    m = res.matrix
    assert list(m.index) == ["input", "0", "1", "2", "3", "4"] == list(m.columns)
    assert np.allclose(m.to_numpy(), m.to_numpy().T, atol=0)
    assert np.allclose(np.diag(m.to_numpy()), 1.0, atol=1e-12)
    with torch.no_grad():
        acts = {"input": x, "0": model[0](x)}
        acts["1"] = model[1](acts["0"])
        acts["2"] = model[2](acts["1"])
        acts["3"] = model[3](acts["2"])
        acts["4"] = model[4](acts["3"])
    ref = cka_unbiased if unbiased else cka_biased_gram
    for a in acts:
        for b in acts:
            assert abs(m.loc[a, b] - ref(acts[a].double().numpy(),
                                         acts[b].double().numpy())) < 1e-10
    assert res.summary["estimator"] == ("unbiased" if unbiased else "biased")
    assert res.summary["n"] == 50 and not res.summary["between_models"]


def test_cka_between_models_and_subsampling(rng):
    a, b = _mlp(0), _mlp(1)
    copy_a = copy.deepcopy(a)
    x = torch.tensor(rng.normal(size=(60, 8)), dtype=torch.float32)
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    same = cka(a, x, copy_a, progress=False)
    assert np.allclose(np.diag(same.matrix.to_numpy()), 1.0, atol=1e-12)
    assert same.summary["mean_diagonal"] == pytest.approx(1.0, abs=1e-12)
    res = cka(a, x, b, layers_a=["0", "4"], layers_b=["re:^[24]$"], max_samples=25, seed=2,
              progress=False)
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb
    assert res.matrix.shape == (2, 2) and list(res.matrix.columns) == ["2", "4"]
    assert res.summary["n"] == 25 and res.summary["between_models"]
    idx = np.sort(np.random.default_rng(2).choice(60, size=25, replace=False))
    with torch.no_grad():
        ref = cka_biased_gram(a[0](x[idx]).double().numpy(), b(x[idx]).double().numpy())
    assert abs(res.matrix.loc["0", "4"] - ref) < 1e-10
    with pytest.raises(DataError, match="at least 4"):
        cka(a, x[:3], unbiased=True, progress=False)
    with pytest.raises(ConfigError):
        cka(a, x, max_samples=1, progress=False)
    with pytest.raises(ConfigError):
        cka(a, x, model_b="b", progress=False)
