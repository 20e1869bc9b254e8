"""`deepscope ntk` and `deepscope experiment overparam` end to end through deepscope.cli.main."""
import json

import pytest

from deepscope.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from deepscope.workflows import train_and_save
    path = tmp_path_factory.mktemp("ntk") / "model.safetensors"
    train_and_save({"arch": "mlp", "widths": [8]}, {"name": "digits", "n_train": 200},
                   {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 50, "seed": 0},
                   path, progress=False)
    return path


def test_ntk_table_and_out_dir(checkpoint, capsys, tmp_path):
    code = main(["ntk", str(checkpoint), "--probe-size", "12", "--quiet",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "eigenvalue" in out and "condition_number:" in out and "n: 12" in out
    for name in ("ntk.csv", "summary.json", "gram.csv", "ntk_spectrum.png"):
        assert (tmp_path / name).stat().st_size > 0
    gram = [l.split(",") for l in (tmp_path / "gram.csv").read_text().splitlines()]
    assert len(gram) == 12 and len(gram[0]) == 12


def test_ntk_json_all_outputs_and_logit(checkpoint, capsys):
    assert main(["ntk", str(checkpoint), "--probe-size", "5", "--outputs", "all",
                 "--method", "ntk-vp", "--float64", "--quiet", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "ntk" and data["summary"]["kernel_size"] == 50
    assert data["summary"]["method"] == "ntk-vp" and data["settings"]["probe_size"] == 5
    assert main(["ntk", str(checkpoint), "--probe-size", "5", "--outputs", "3", "--quiet",
                 "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "index,eigenvalue,fraction" and len(lines) == 6


def test_ntk_bad_input_exits_2(checkpoint, capsys, tmp_path):
    assert main(["ntk", str(checkpoint), "--outputs", "10", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of range" in err[0]
    assert main(["ntk", str(tmp_path / "missing.safetensors"), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["ntk", str(checkpoint), "--outputs", "mean"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["ntk", str(checkpoint), "--probe-size", "0"])
    assert exc.value.code == 2


def test_experiment_overparam(capsys, tmp_path):
    code = main(["experiment", "overparam", "--widths", "8,128", "--n", "6", "--d", "3",
                 "--seeds", "0", "--steps", "15", "--eval-points", "4", "--quiet",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "lambda0:" in out and "slope_drift:" in out and "128" in out
    for name in ("overparam.csv", "curves.csv", "losses.csv", "summary.json",
                 "loss_curves.png", "gram_curves.png", "width_scaling.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["kind"] == "overparam" and len(data["table"]) == 2
    assert main(["experiment", "overparam", "--widths", "8", "--step-scale", "3",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step_scale" in err[0]


def test_zoo_probe_matches_the_cli(checkpoint, capsys):
    from deepscope.dynamics.ntk import ntk_probe
    r = ntk_probe(checkpoint, probe_size=7, seed=1, outputs=2)
    assert main(["ntk", str(checkpoint), "--probe-size", "7", "--seed", "1", "--outputs", "2",
                 "--quiet", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["lambda_max"] == pytest.approx(r.summary["lambda_max"], rel=1e-6)
    assert r.summary["n"] == 7 and r.settings["probe_size"] == 7
