"""analyze_spectrum end to end (against weightwatcher.analyze) and the ESD helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepscope.errors import ConfigError, ShapeError
from deepscope.weights.analyze import COLUMNS, TRUNCATED_COLUMNS, analyze_spectrum
from deepscope.weights.esd import esd_density, matrix_eigenvalues, spectrum_shape


def _student_t_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(),
                                torch.nn.Linear(200, 100))
    with torch.no_grad():
        model[0].weight.copy_(torch.distributions.StudentT(3.0).sample((200, 300)) * 0.05)
    return model


def test_matches_weightwatcher_analyze():
    ww = pytest.importorskip("weightwatcher")
    model = _student_t_model()
    details = ww.WeightWatcher(model=model).analyze()
    assert len(details) == 2
    for (_, ref), layer in zip(details.iterrows(), (model[0], model[2])):
        W = layer.weight
        N, M, k = spectrum_shape(W)
        row = analyze_spectrum(matrix_eigenvalues(W), N, M, num_matrices=k, min_tail=2)
        assert row["fit_status"] == "ok"
        for ours, theirs in [("alpha", "alpha"), ("xmin", "xmin"), ("ks_distance", "D"),
                             ("num_tail", "num_pl_spikes"), ("log_norm", "log_norm"),
                             ("alpha_weighted", "alpha_weighted"),
                             ("log_spectral_norm", "log_spectral_norm"),
                             ("log_alpha_norm", "log_alpha_norm"), ("stable_rank", "stable_rank"),
                             ("entropy", "entropy"), ("lambda_max", "lambda_max"),
                             ("num_evals", "num_evals")]:
            assert row[ours] == pytest.approx(ref[theirs], rel=1e-6), ours


def test_columns_are_the_public_contract():
    evals = matrix_eigenvalues(torch.randn(120, 80, generator=torch.Generator().manual_seed(1)))
    row = analyze_spectrum(evals, 120, 80)
    assert tuple(row) == COLUMNS
    assert row["phase"] == "random-like"
    assert row["mp_sigma"] == pytest.approx(1.0, rel=0.03)
    assert math.isnan(row["alpha_ci_low"]) and math.isnan(row["alpha_ci_high"])
    row = analyze_spectrum(evals, 120, 80, truncated=True, bootstrap=30, seed=3)
    assert tuple(row) == COLUMNS + TRUNCATED_COLUMNS
    assert row["alpha_ci_low"] < row["alpha"] < row["alpha_ci_high"]
    assert row == analyze_spectrum(evals, 120, 80, truncated=True, bootstrap=30, seed=3)


def test_non_finite_input_gives_nan_row():
    evals = np.linspace(0.1, 5.0, 50)
    evals[7] = np.nan
    row = analyze_spectrum(evals, 100, 50, truncated=True)
    assert tuple(row) == COLUMNS + TRUNCATED_COLUMNS
    assert row["fit_status"] == "not_finite" and row["phase"] == "undetermined"
    assert row["num_evals"] == 50
    for key, value in row.items():
        if key not in ("fit_status", "phase", "num_evals"):
            assert math.isnan(value), key


def test_failed_fit_nans_the_alpha_columns():
    Qm, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(200, 100)))
    row = analyze_spectrum(np.linalg.svd(Qm, compute_uv=False) ** 2, 200, 100, bootstrap=20,
                           truncated=True)
    assert row["fit_status"] == "degenerate" and row["phase"] == "undetermined"
    for key in ("alpha", "xmin", "ks_distance", "num_tail", "alpha_weighted", "log_alpha_norm",
                "alpha_ci_low", "alpha_ci_high") + TRUNCATED_COLUMNS:
        assert math.isnan(row[key]), key
    assert row["stable_rank"] == pytest.approx(100.0)
    assert row["log_norm"] == pytest.approx(2.0)


def test_input_validation():
    evals = np.linspace(0.1, 5.0, 50)
    with pytest.raises(ShapeError, match="eigenvalues"):
        analyze_spectrum(evals, 100, 40)
    with pytest.raises(ConfigError, match=">= 0"):
        analyze_spectrum(np.r_[-1.0, evals[1:]], 100, 50)
    with pytest.raises(ConfigError):
        analyze_spectrum(evals, 100, 50, bootstrap=-1)
    tiny_negative = np.r_[-1e-9, evals[1:]]          # eigvalsh round-off is clipped
    assert analyze_spectrum(tiny_negative, 100, 50)["fit_status"] == "ok"


def test_eigenvalues_of_stacks_and_precision():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(9, 40, 24, generator=g, dtype=torch.float64)
    ev = matrix_eigenvalues(W)
    assert spectrum_shape(W) == (40, 24, 9)
    ref = np.sort(np.concatenate([np.linalg.svd(w, compute_uv=False) ** 2 for w in W.numpy()]))
    assert ev == pytest.approx(ref, rel=1e-10)
    assert matrix_eigenvalues(W.transpose(-1, -2)) == pytest.approx(ref, rel=1e-10)
    ev32 = matrix_eigenvalues(W.float(), dtype=torch.float32)
    assert ev32[-20:] == pytest.approx(ref[-20:], rel=1e-5)
    centers, dens = esd_density(ev, bins=20)
    assert len(centers) == 20 and np.sum(dens * np.diff(centers)[0]) == pytest.approx(1.0)
    with pytest.raises(ShapeError):
        spectrum_shape(torch.ones(5))
