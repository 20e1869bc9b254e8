"""GDV (Schilling et al.): against a brute-force python implementation, and its behaviour."""
import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, DataError, ShapeError
from deepscope.representations.gdv import (GDV_COLUMNS, first_local_minimum, gdv, gdv_of,
                                           subsample_per_class)
from rep_reference import gdv_bruteforce


def clusters(rng, sep, n_per=40, k=4, dim=10):
    means = rng.normal(size=(k, dim)) * sep
    y = np.repeat(np.arange(k), n_per)
    return means[y] + rng.normal(size=(k * n_per, dim)), y


def test_matches_bruteforce_with_constant_dims_and_duplicates(rng):
    x = rng.normal(size=(37, 6))
    x[:, 2] = 1.5                      # a constant dimension -> 0, still counted in D
    x[5] = x[6]                        # duplicate points (exact-distance path)
    x[7] = x[8]
    x[7, 0] += 1e-9
    y = rng.integers(0, 3, size=37)
    ref = gdv_bruteforce(x, y)
    for block in (1, 5, 1024):         # block-wise sums must not change the value
        st = gdv_of(x, y, block_size=block)
        assert abs(st.gdv - ref) < 1e-10
    assert st.num_constant == 1 and st.dim == 6 and st.n == 37
    assert st.gdv == pytest.approx(st.intra_mean - st.inter_mean, abs=1e-15)
    assert st.inter.shape == (3, 3) and np.allclose(np.diag(st.inter), st.intra)


def test_matches_bruteforce_float32_and_torch_input(rng):
    x, y = clusters(rng, 2.0, n_per=12, k=3, dim=5)
    xt = torch.tensor(x, dtype=torch.float32)
    ref = gdv_bruteforce(xt.double().numpy(), y)
    assert abs(gdv_of(xt, torch.tensor(y)).gdv - ref) < 1e-10
    # per-point shapes are flattened
    assert abs(gdv_of(xt.reshape(36, 5, 1), y).gdv - ref) < 1e-10


def test_separated_clusters_very_negative_shuffled_near_zero(rng):
    x, y = clusters(rng, 10.0)
    assert gdv_of(x, y).gdv < -0.6
    shuffled = [gdv_of(x, rng.permutation(y)).gdv for _ in range(5)]
    assert abs(np.mean(shuffled)) < 0.01
    # better separation -> more negative
    assert gdv_of(*clusters(np.random.default_rng(1), 1.0)).gdv > gdv_of(x, y).gdv


def test_invariant_to_per_dimension_affine_maps(rng):
    x, y = clusters(rng, 1.0, n_per=15, k=3, dim=4)
    a = rng.uniform(0.1, 10, size=4)
    b = rng.normal(size=4) * 100
    assert gdv_of(x * a + b, y).gdv == pytest.approx(gdv_of(x, y).gdv, abs=1e-10)


def test_subsampling_is_seeded_and_per_class(rng):
    y = np.repeat(np.arange(3), [50, 7, 30])
    idx = subsample_per_class(y, 10, seed=3)
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [10, 7, 10]
    assert np.array_equal(idx, subsample_per_class(y, 10, seed=3))
    assert not np.array_equal(idx, subsample_per_class(y, 10, seed=4))
    x = rng.normal(size=(87, 3))
    st = gdv_of(x, y, max_per_class=10, seed=3)
    assert st.n == 27
    assert abs(st.gdv - gdv_bruteforce(x[idx], y[idx])) < 1e-10


def test_bad_inputs():
    x = np.zeros((6, 2))
    with pytest.raises(DataError, match="2 classes"):
        gdv_of(np.random.rand(6, 2), np.zeros(6, dtype=int))
    with pytest.raises(DataError, match="2 points per class"):
        gdv_of(np.random.rand(6, 2), np.array([0, 0, 0, 1, 1, 2]))
    with pytest.raises(DataError, match="integer class labels"):
        gdv_of(x, np.linspace(0, 1, 6))
    with pytest.raises(ShapeError):
        gdv_of(x, np.zeros((6, 2), dtype=int))
    bad = np.random.rand(6, 2)
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        gdv_of(bad, np.array([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ConfigError):
        gdv_of(np.random.rand(6, 2), np.array([0, 0, 0, 1, 1, 1]), max_per_class=1)


def test_first_local_minimum():
    assert first_local_minimum([0, -1, -2, -1, -3]) == 2
    assert first_local_minimum([0, -1, -2]) == 2
    assert first_local_minimum([0, 1]) == 0


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


def test_gdv_per_layer_matches_manual_activations(rng):
    model = _mlp().train()
    x, y = clusters(rng, 2.0, n_per=20, k=3, dim=5)
    xt = torch.tensor(x, dtype=torch.float32)
    before = state_fingerprint(model)
    res = gdv(model, (xt, torch.tensor(y)), progress=False)
    assert state_fingerprint(model) == before and model.training
    assert tuple(res.table.columns) == GDV_COLUMNS
    assert res.table["layer"].tolist() == ["input", "0", "1", "3"]
    assert res.table["index"].tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        h0 = model[0](xt)
        manual = {"input": xt, "0": h0, "1": model[1](h0), "3": model[3](model[1](h0))}
    for _, row in res.table.iterrows():
        ref = gdv_bruteforce(manual[row["layer"]].double().numpy(), y)
        assert abs(row["gdv"] - ref) < 1e-10
        assert row["n"] == 60 and row["dim"] == manual[row["layer"]].shape[1]
    s = res.summary
    assert s["best_gdv"] == res.table["gdv"].min()
    assert s["output_layer"] == "3" and s["input_gdv"] == res.table["gdv"].iloc[0]
    assert s["num_classes"] == 3 and s["n"] == 60


def test_gdv_options_and_errors(rng):
    model = _mlp()
    x, y = clusters(rng, 2.0, n_per=20, k=3, dim=5)
    data = (torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    res = gdv(model, data, layers=["0"], include_input=False, max_per_class=8, seed=1,
              progress=False)
    assert res.table["layer"].tolist() == ["0"] and res.table["n"].tolist() == [24]
    assert res.table["index"].tolist() == [1]
    assert res.settings["max_per_class"] == 8
    with pytest.raises(DataError, match="labels"):
        gdv(model, data[0], progress=False)
    with pytest.raises(ConfigError):
        gdv(model, data, layers=["nope"], progress=False)
    with pytest.raises(ConfigError):
        gdv(model, data, max_per_class=0, progress=False)
    with pytest.raises(ConfigError):
        gdv("model", data, progress=False)


def test_training_improves_output_separation():
    from deepscope.workflows import train_and_save
    run = train_and_save({"arch": "mlp", "widths": [32, 32]},
                         {"name": "digits", "n_train": 400},
                         {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 8,
                          "batch_size": 32, "seed": 0}, None, progress=False)
    before = state_fingerprint(run.model)
    res = gdv(run.model, run.dataset, max_per_class=30, progress=False)
    assert state_fingerprint(run.model) == before
    t = res.table.set_index("layer")
    assert list(t.index) == ["input", "act1", "act2", "out"]
    # a trained classifier separates classes better at the output than in pixel space
    assert t.at["out", "gdv"] < t.at["input", "gdv"] - 0.05
    assert res.summary["best_layer"] != "input"
