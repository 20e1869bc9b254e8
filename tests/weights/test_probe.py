"""deepscope.spectra end to end: layer coverage, columns, summary, determinism, contracts."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError
from deepscope.weights import COLUMNS, PHASES, SpectraResult, spectra
from deepscope.weights.analyze import analyze_spectrum


class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(300, 64)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.lstm = nn.LSTM(64, 32, batch_first=True)
        self.conv = nn.Conv2d(16, 32, 3)
        self.conv1d = nn.Conv1d(8, 24, 5)
        self.fc = nn.Linear(200, 100)
        self.tiny = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(100)


@pytest.fixture(scope="module")
def zoo():
    return Zoo().eval()


def test_rows_and_columns(zoo):
    r = spectra(zoo, progress=False)
    assert isinstance(r, SpectraResult)
    assert tuple(r.table.columns[:len(COLUMNS)]) == COLUMNS
    layers = list(r.table["layer"])
    for name in ("emb", "attn.in_proj.q", "attn.in_proj.k", "attn.in_proj.v", "attn.out_proj",
                 "lstm.weight_ih_l0.i", "lstm.weight_hh_l0.o", "conv", "conv1d", "fc", "tiny"):
        assert name in layers, name
    tiny = r.table.set_index("layer").loc["tiny"]
    assert tiny["fit_status"] == "skipped" and "min_evals" in tiny["note"]
    conv = r.table.set_index("layer").loc["conv"]
    assert (conv["N"], conv["M"], conv["num_matrices"], conv["num_evals"]) == (32, 16, 9, 144)
    assert set(r.table["phase"]) <= set(PHASES)
    assert r.summary["num_skipped"] == 1
    assert sum(r.summary["phase_counts"].values()) == r.summary["num_analyzed"]


def test_rows_equal_analyze_spectrum_on_numpy_eigenvalues(zoo):
    r = spectra(zoo, progress=False, conv2d_norm=False)
    t = r.table.set_index("layer")
    W = zoo.fc.weight.detach().double().numpy()
    ev = np.linalg.svd(W, compute_uv=False) ** 2
    ref = analyze_spectrum(ev, 200, 100)
    for col in ("alpha", "xmin", "ks_distance", "log_norm", "stable_rank", "mp_sigma"):
        assert t.at["fc", col] == pytest.approx(ref[col], rel=2e-4), col
    slices = zoo.conv.weight.detach().double().numpy()
    ev = np.concatenate([np.linalg.svd(slices[:, :, i, j], compute_uv=False) ** 2
                         for i in range(3) for j in range(3)])
    assert t.at["conv", "lambda_max"] == pytest.approx(ev.max(), rel=1e-5)
    assert t.at["conv", "log_norm"] == pytest.approx(math.log10(ev.sum()), rel=1e-5)


def test_conv2d_norm_halves_conv2d_eigenvalues_only(zoo):
    a = spectra(zoo, progress=False).table.set_index("layer")
    b = spectra(zoo, progress=False, conv2d_norm=False).table.set_index("layer")
    assert a.at["conv", "lambda_max"] == pytest.approx(b.at["conv", "lambda_max"] / 2)
    assert a.at["conv", "alpha"] == pytest.approx(b.at["conv", "alpha"], rel=1e-9)
    assert a.at["conv1d", "lambda_max"] == b.at["conv1d", "lambda_max"]
    assert a.at["fc", "lambda_max"] == b.at["fc", "lambda_max"]


def test_summary_means_over_fitted_layers_only(zoo):
    r = spectra(zoo, progress=False)
    ok = r.table[r.table["fit_status"] == "ok"]
    for col in ("alpha", "alpha_weighted", "log_norm", "log_alpha_norm", "log_spectral_norm",
                "stable_rank"):
        assert r.summary[col] == pytest.approx(ok[col].astype(float).mean())
    assert r.summary["num_fitted"] + r.summary["num_failed"] == r.summary["num_analyzed"]


def test_deterministic_with_seed_and_model_untouched(zoo):
    before = state_fingerprint(zoo)
    a = spectra(zoo, progress=False, bootstrap=30, randomize=True, seed=3)
    b = spectra(zoo, progress=False, bootstrap=30, randomize=True, seed=3)
    assert state_fingerprint(zoo) == before
    pd.testing.assert_frame_equal(a.table, b.table)
    assert {"rand_lambda_max", "num_traps", "rand_distance"} <= set(a.table.columns)
    ok = a.table[a.table["fit_status"] == "ok"]
    assert (ok["alpha_ci_low"] <= ok["alpha"]).all() and (ok["alpha"] <= ok["alpha_ci_high"]).all()
    assert ((a.table["rand_distance"].dropna() >= 0) & (a.table["rand_distance"].dropna() <= 1)).all()


def test_correlation_trap_is_found():
    torch.manual_seed(1)
    m = nn.Linear(400, 200)
    with torch.no_grad():
        m.weight.normal_(0, 0.05)
        m.weight[3, 7] = 5.0  # one huge entry survives shuffling: a correlation trap
    plain = nn.Linear(400, 200)
    with torch.no_grad():
        plain.weight.normal_(0, 0.05)
    t = spectra(m, progress=False, randomize=True).table
    assert t.loc[0, "num_traps"] >= 1
    assert spectra(plain, progress=False, randomize=True).table.loc[0, "num_traps"] == 0


def test_nan_layer_marked_others_correct():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(100, 80), nn.Linear(80, 60))
    clean = spectra(m, progress=False).table
    with torch.no_grad():
        m[0].weight[0, 0] = float("nan")
    r = spectra(m, progress=False)
    t = r.table.set_index("layer")
    assert t.at["0", "fit_status"] == "not_finite"
    assert t.at["0", "phase"] == "undetermined"
    assert math.isnan(t.at["0", "alpha"])
    assert t.at["1", "alpha"] == clean.set_index("layer").at["1", "alpha"]
    assert r.summary["num_failed"] == 1


def test_layer_filter_and_json(zoo):
    r = spectra(zoo, layers=["fc", "re:^attn\\."], progress=False)
    assert set(r.table["layer"]) == {"fc", "attn.in_proj.q", "attn.in_proj.k",
                                     "attn.in_proj.v", "attn.out_proj"}
    d = json.loads(r.to_json())
    assert d["kind"] == "spectra" and len(d["table"]) == 5
    assert "phase_counts" in d["summary"]


def test_file_sources_equal_module(tmp_path, zoo):
    from safetensors.torch import save_file
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.state_dict().items()}, str(path))
    a = spectra(zoo, layers=["fc", "emb"], progress=False).table.set_index("layer")
    for streaming in (False, True):
        b = spectra(path, layers=["fc", "emb"], progress=False,
                    streaming=streaming).table.set_index("layer")
        for layer in ("fc", "emb"):
            assert b.at[layer, "alpha"] == pytest.approx(a.at[layer, "alpha"], rel=1e-9)


def test_checkpoint_source(tmp_path):
    from deepscope.nets import build_model
    from deepscope.train.checkpoint import save_checkpoint
    m = build_model({"arch": "mlp", "widths": [64, 32], "input_shape": [64],
                     "num_outputs": 10}, seed=0)
    init = {k: v * 2 for k, v in m.state_dict().items()}
    path = save_checkpoint(tmp_path / "c.safetensors", m, init_params=init)
    t = spectra(path, progress=False).table
    assert not any(l.startswith("init.") for l in t["layer"])
    assert spectra(m, progress=False).table["alpha"].equals(t["alpha"])


def test_bad_options(zoo):
    with pytest.raises(ConfigError):
        spectra(zoo, bootstrap=-1, progress=False)
    with pytest.raises(ConfigError):
        spectra(zoo, conv="nope", progress=False)
    with pytest.raises(ConfigError):
        spectra(zoo, layers=["no_such_layer"], progress=False)


def test_float32_top_of_spectrum_matches_float64(zoo):
    a = spectra(zoo, progress=False).table.set_index("layer")
    b = spectra(zoo, progress=False, dtype=torch.float64).table.set_index("layer")
    ok = a.index[a["fit_status"] == "ok"]
    np.testing.assert_allclose(a.loc[ok, "lambda_max"], b.loc[ok, "lambda_max"], rtol=1e-5)
    np.testing.assert_allclose(a.loc[ok, "log_norm"], b.loc[ok, "log_norm"], rtol=1e-5)


def test_monitor_records_phases_during_training():
    from deepscope.data import load_dataset
    from deepscope.train import train
    from deepscope.weights import SpectraMonitor
    ds = load_dataset("digits", n_train=300)
    mon = SpectraMonitor(every=2, layers=["fc1", "fc2"])
    spec = {"arch": "mlp", "widths": [64, 32], "input_shape": [64], "num_outputs": 10}
    run = train(spec, ds, epochs=4, lr=0.05, callbacks=[mon], progress=False)
    assert sorted(mon.table["epoch"].unique()) == [0, 2, 4]
    assert set(mon.table["layer"]) == {"fc1", "fc2"}
    assert "spectra/alpha" in run.history and "spectra/heavy-tailed" in run.history
