"""`deepscope margins`, `deepscope predict-gap` and `deepscope experiment margin-gap` end to end
through deepscope.cli.main: exit codes, printed output, written files, one-line errors."""
import json

import pandas as pd
import pytest

from deepscope.cli import main
from deepscope.sweep import run_sweep

SPEC = {"base": {"arch": {"arch": "mlp", "widths": [8]},
                 "data": {"name": "digits", "n_train": 120, "n_test": 80},
                 "train": {"epochs": 2, "lr": 0.05, "momentum": 0.9}},
        "grid": {"train.lr": [0.02, 0.2]}, "seeds": [0, 1, 2]}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    z = tmp_path_factory.mktemp("zoo")
    assert run_sweep(SPEC, z, progress=False).done == 6
    return z


@pytest.fixture(scope="module")
def ckpt(zoo):
    return sorted((zoo / "runs").glob("*.safetensors"))[0]


def _one_line_error(capsys, args):
    """Exit code 2 and one line on stderr (API errors return 2, argparse exits with 2)."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepscope: error:") and len(err.splitlines()) == 1
    return err


def test_margins_command(ckpt, tmp_path, capsys):
    assert main(["margins", str(ckpt), "--quiet", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "lower_fence" in out and "signature (log|.|): log_l0_q1=" in out
    for name in ("margins.csv", "margins.json", "signature.csv", "margins.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    sig = pd.read_csv(tmp_path / "o" / "signature.csv")
    assert len(sig) == 20 and list(sig.columns) == ["feature", "value", "log_value"]
    assert main(["margins", str(ckpt), "--quiet", "--format", "json", "--layers",
                 "input,out", "--all-points"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "margins" and [r["layer"] for r in data["table"]] == ["input", "out"]
    assert data["summary"]["n_used"] == data["summary"]["n_points"]
    assert main(["margins", str(ckpt), "--quiet", "--format", "csv", "--split", "test"]) == 0
    assert capsys.readouterr().out.startswith("position,layer,dim,nu,n,")


def test_margins_errors(ckpt, tmp_path, capsys):
    assert "unknown layer 'nope'" in _one_line_error(
        capsys, ["margins", str(ckpt), "--layers", "nope", "--quiet"])
    _one_line_error(capsys, ["margins", str(tmp_path / "missing.safetensors")])
    _one_line_error(capsys, ["margins", str(ckpt), "--batch-size", "0"])


def test_predict_gap_and_apply(zoo, ckpt, tmp_path, capsys):
    out = tmp_path / "pg"
    pred = tmp_path / "pred.json"
    assert main(["predict-gap", str(zoo), "--no-measures", "--k", "3", "--quiet",
                 "--save-predictor", str(pred), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "margin_signature_regression" in text and "r2_cv:" in text
    for name in ("predict_gap.csv", "predict_gap.json", "predict_gap_models.csv",
                 "predictor.json", "predict_gap_predicted_vs_true.png", "predict_gap_tau.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads(pred.read_text())["coef"] == json.loads(
        (out / "predictor.json").read_text())["coef"]
    models = pd.read_csv(out / "predict_gap_models.csv")
    assert len(models) == 6 and "log_l3_upper_fence" in models.columns
    assert main(["predict-gap", "--predictor", str(pred), str(ckpt), "--quiet",
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    row = models[models["checkpoint"] == str(ckpt.resolve())].iloc[0]
    p = json.loads(pred.read_text())
    want = p["intercept"] + sum(c * row[f] for c, f in zip(p["coef"], p["feature_names"]))
    assert data["table"][0]["predicted_gap"] == pytest.approx(want, rel=1e-6, abs=1e-9)
    # errors: two paths without --predictor; a bad predictor file; a bad option value
    assert "one zoo directory" in _one_line_error(
        capsys, ["predict-gap", str(zoo), str(zoo), "--no-measures", "--quiet"])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert "not a gap predictor" in _one_line_error(
        capsys, ["predict-gap", "--predictor", str(bad), str(ckpt), "--quiet"])
    _one_line_error(capsys, ["predict-gap", str(zoo), "--k", "0"])
    _one_line_error(capsys, ["predict-gap", str(tmp_path / "nozoo"), "--no-measures"])


def test_experiment_margin_gap(tmp_path, capsys):
    args = ["experiment", "margin-gap", "--zoo", str(tmp_path / "z"), "--n-train", "100",
            "--epochs", "1", "--seeds", "0,1", "--widths", "16", "--depths", "none",
            "--lrs", "0.1", "--batch-sizes", "none", "--weight-decays", "none",
            "--dropouts", "none", "--label-noises", "none", "--no-measures", "--k", "3",
            "--quiet", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "margin_signature_regression" in text and "train_s:" in text
    for name in ("margin_gap.csv", "margin_gap.json", "margin_gap_models.csv",
                 "predictor.json", "margin_gap_predicted_vs_true.png", "margin_gap_tau.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    _one_line_error(capsys, ["experiment", "margin-gap", "--widths", "a,b"])
