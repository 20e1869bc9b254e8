"""predict_gap end to end on a tiny zoo: features against margins() recomputed directly, the
regression against an explicit k-fold fit, measure scores against scores.py, the saved
predictor applied to checkpoints, the margin-gap experiment's specs, checkpoints untouched."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import deepscope
from deepscope.errors import ConfigError
from deepscope.generalization.margins import log_features, margins
from deepscope.generalization.predict import (REGRESSION_NAME, GapPredictor, apply_predictor,
                                              hyperparameter_columns, load_predictor,
                                              predict_gap)
from deepscope.generalization.scores import (fit_linear, kendall_tau, kfold_indices,
                                             kfold_r2)
from deepscope.sweep import registered_probes, run_sweep

SPEC = {"base": {"arch": {"arch": "mlp", "widths": [8]},
                 "data": {"name": "digits", "n_train": 150, "n_test": 100},
                 "train": {"epochs": 2, "lr": 0.05, "momentum": 0.9, "batch_size": 32}},
        "grid": {"arch.widths": [[8], [16, 16]], "train.lr": [0.02, 0.2]},
        "seeds": [0, 1]}


def _digest(zoo):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((zoo / "runs").glob("*.safetensors"))}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    z = tmp_path_factory.mktemp("zoo")
    s = run_sweep(SPEC, z, progress=False)
    assert s.done == 8
    return z


@pytest.fixture(scope="module")
def gap_result(zoo):
    before = _digest(zoo)
    res = predict_gap(zoo, measures=True,
                      measure_options={"which": ["params", "param_norm", "dist_from_init"]},
                      k=4, seed=1, progress=False)
    assert _digest(zoo) == before  # checkpoints untouched
    return res


def test_probes_registered_and_picklable():
    import pickle

    from deepscope.generalization.probes import margins_probe, measures_probe
    from deepscope.sweep import get_probe
    assert {"margins", "measures", "spectra"} <= set(registered_probes())
    assert get_probe("margins") is margins_probe and get_probe("measures") is measures_probe
    for fn in (margins_probe, measures_probe):  # the process engine pickles by reference
        assert pickle.loads(pickle.dumps(fn)) is fn


def test_features_gap_and_hyperparameters(zoo, gap_result):
    m = gap_result.models
    assert len(m) == 8
    feats = gap_result.predictor.feature_names
    assert len(feats) == 20 and feats[0] == "log_l0_q1" and feats[-1] == "log_l3_upper_fence"
    for _, row in m.iloc[[0, 5]].iterrows():
        ckpt = deepscope.load(row["checkpoint"])
        direct = margins(ckpt.model, ckpt.dataset(), progress=False)
        np.testing.assert_allclose(row[feats].to_numpy(float),
                                   log_features(direct.signature().to_numpy()), rtol=1e-9)
        assert row["gap"] == pytest.approx(ckpt.metrics["train_acc"] - ckpt.metrics["test_acc"])
    assert set(m["arch.depth"]) == {1, 2} and set(m["arch.width"]) == {8, 16}
    assert gap_result.summary["hyperparams"] == hyperparameter_columns(m) == \
        ["train.lr", "arch.depth", "arch.width"]
    assert gap_result.summary["fixed"] == ["train.seed"]


def test_regression_against_explicit_kfold(gap_result):
    m = gap_result.models
    feats = gap_result.predictor.feature_names
    X, y = m[feats].to_numpy(float), m["gap"].to_numpy(float)
    oof = np.empty(len(y))
    for test in kfold_indices(len(y), 4, 1):
        train = np.setdiff1d(np.arange(len(y)), test)
        b, w, _, _ = fit_linear(X[train], y[train])
        oof[test] = b + X[test] @ w
    np.testing.assert_allclose(m[REGRESSION_NAME].to_numpy(float), oof, rtol=1e-9, atol=1e-12)
    s = gap_result.summary
    ref = kfold_r2(X, y, k=4, seed=1)
    assert s["r2_cv"] == pytest.approx(ref["r2"]) and s["r2_train"] == pytest.approx(1.0)
    assert s["tau_cv"] == pytest.approx(kendall_tau(oof, y))
    b, w, _, _ = fit_linear(X, y)
    np.testing.assert_allclose(gap_result.predictor.coef, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gap_result.predictor.predict(m), b + X @ w, rtol=1e-9,
                               atol=1e-12)


def test_measure_scores(gap_result):
    t = gap_result.table.set_index("measure")
    assert {REGRESSION_NAME, "params", "param_norm"} <= set(t.index)
    m = gap_result.models
    for name in ("params", "param_norm"):
        assert t.loc[name, "tau"] == pytest.approx(kendall_tau(m[f"measure.{name}"], m["gap"]),
                                                   nan_ok=True)
        assert t.loc[name, "n"] == 8
    # the initial weights reach the measures: distance from initialization > 0
    assert (m["measure.dist_from_init"] > 0).all()
    # the parameter count: one value per architecture (width and depth move together)
    assert m.groupby("arch.depth")["measure.params"].nunique().eq(1).all()
    assert t.loc[REGRESSION_NAME, "r2_cv"] == pytest.approx(gap_result.summary["r2_cv"])
    assert {"psi", "cmi", "cmi_argmin", "psi.train.lr"} <= set(t.columns)


def test_predictor_roundtrip_and_apply(zoo, gap_result, tmp_path):
    path = gap_result.predictor.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["format"] == "deepscope-gap-predictor/1" and len(data["coef"]) == 20
    assert data["layers"] is None and data["stats"]["n_models"] == 8
    p = load_predictor(path)
    assert p.coef == pytest.approx(gap_result.predictor.coef)
    m = gap_result.models
    ckpts = list(m["checkpoint"].iloc[:2])
    before = _digest(zoo)
    out = apply_predictor(path, ckpts, progress=False)
    assert _digest(zoo) == before
    want = gap_result.predictor.predict(m.iloc[:2])
    np.testing.assert_allclose(out.table["predicted_gap"], want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out.table["gap"], m["gap"].iloc[:2])
    assert out.summary["n_models"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a gap predictor"):
        load_predictor(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_predictor(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="features"):
        GapPredictor(["a", "b"], [1.0, 2.0], 0.0).predict(pd.DataFrame({"a": [1.0]}))


def test_explicit_layers_and_errors(zoo, tmp_path):
    res = predict_gap(zoo, layers=["input", "out"], measures=False, k=3, progress=False)
    assert len(res.predictor.feature_names) == 10
    assert res.predictor.layers == ["input", "out"]
    with pytest.raises(ConfigError, match="margin_options"):
        predict_gap(zoo, margin_options={"bogus": 1}, measures=False, progress=False)
    with pytest.raises(ConfigError):
        predict_gap(tmp_path / "nozoo", measures=False, progress=False)
    with pytest.raises(ConfigError, match="at least 9"):
        predict_gap(zoo, measures=False, k=9, progress=False)


def test_margin_gap_specs_and_tiny_study(tmp_path):
    from deepscope.experiments.margin_gap import margin_gap_specs, margin_gap_study
    from deepscope.sweep import expand_spec
    specs = margin_gap_specs()
    ids = {t.id for s in specs for t in expand_spec(s)}
    assert len(specs) == 6 and len(ids) == 15 * 4
    res = margin_gap_study(tmp_path / "z", n_train=100, epochs=1, seeds=(0, 1),
                           widths=[16], depths=[], lrs=[0.1], batch_sizes=[],
                           weight_decays=[], dropouts=[], label_noises=[],
                           measures=False, k=3, progress=False)
    assert res.kind == "margin-gap" and res.summary["n_models"] == 6
    assert res.summary["trained_now"] == 6 and res.summary["train_s"] > 0
    assert set(res.summary["hyperparams"]) == {"arch.width", "train.lr"}
    with pytest.raises(ConfigError):
        margin_gap_specs(seeds=())
