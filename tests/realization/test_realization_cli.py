"""`deepscope realization` and `deepscope experiment inverse-stability` end to end."""
import json

import pytest

from deepscope.cli import main


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from deepscope.workflows import train_and_save
    d = tmp_path_factory.mktemp("real")
    paths = []
    for seed in (0, 1):
        p = d / f"m{seed}.safetensors"
        train_and_save({"arch": "mlp", "widths": [6]},
                       {"name": "teacher", "task": "regression", "input_dim": 2,
                        "n_train": 64, "n_test": 16},
                       {"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 32,
                        "seed": seed}, p, progress=False)
        paths.append(p)
    deep = d / "deep.safetensors"
    train_and_save({"arch": "mlp", "widths": [4, 4]},
                   {"name": "teacher", "task": "regression", "input_dim": 2, "n_train": 32,
                    "n_test": 8},
                   {"optimizer": "sgd", "lr": 0.01, "epochs": 1, "batch_size": 32, "seed": 0},
                   deep, progress=False)
    return paths + [deep]


def test_realization_table_and_out(checkpoints, capsys, tmp_path):
    a, b, _ = checkpoints
    assert main(["realization", str(a), str(b), "--samples", "256", "--out",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "neuron_a" in out and "param_distance:" in out and "sobolev:" in out
    for name in ("realization.csv", "pathologies.csv", "summary.json", "realization.png"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["domain"].startswith("64 data points")  # A's training inputs


def test_realization_json_box_domain(checkpoints, capsys):
    a, b, _ = checkpoints
    assert main(["realization", str(a), str(a), "--domain=-2,2", "--samples", "100",
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["param_distance"] < 1e-12 and data["summary"]["sup"] == 0
    assert data["settings"]["box"] == [[-2.0, 2.0], [-2.0, 2.0]]
    assert main(["realization", str(a), str(b), "--samples", "64", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("neuron_a,neuron_b")


@pytest.mark.parametrize("extra,needle", [
    (["--domain=2,1"], "lo <= hi"),
    (["--samples", "0"], "positive integer"),
])
def test_realization_bad_options_exit_2(checkpoints, capsys, extra, needle):
    a, b, _ = checkpoints
    assert_exit_2(["realization", str(a), str(b), *extra], capsys, needle)


def assert_exit_2(argv, capsys, needle):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_realization_bad_models_exit_2(checkpoints, capsys, tmp_path):
    a, _, deep = checkpoints
    assert_exit_2(["realization", str(a), str(deep)], capsys, "expected a shallow ReLU network")
    assert_exit_2(["realization", str(a), str(tmp_path / "missing.safetensors")], capsys,
                  "no such file")


def test_experiment_end_to_end(capsys, tmp_path):
    argv = ["experiment", "inverse-stability", "--bases", "1", "--seed-pairs", "1",
            "--perturbations", "0.001,0.1", "--strengths", "10", "--width", "6",
            "--n-train", "32", "--epochs", "5", "--retrain-epochs", "1", "--samples", "100",
            "--injections", "opposite,dead", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fit: d_param <=" in out and "opposite: breaks the bound in 100%" in out
    assert (tmp_path / "inverse_stability.png").stat().st_size > 0
    data = json.loads((tmp_path / "inverse_stability.json").read_text())
    assert len(data["table"]) == 3 + 2
    assert main([*argv, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "inverse-stability"
    assert_exit_2([*argv, "--injections", "zigzag"], capsys, "unknown injections")
    assert_exit_2([*argv, "--strengths", "0.5"], capsys, "numbers >= 1")
