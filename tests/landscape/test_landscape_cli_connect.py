"""`deepscope connect` and `deepscope experiment level-sets` end to end through cli.main,
and the demo report section."""
import json

import pandas as pd
import pytest

from deepscope.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from deepscope.workflows import train_and_save
    d = tmp_path_factory.mktemp("connect")
    losses = []
    for s in (0, 1):
        run = train_and_save({"arch": "mlp", "widths": [16]}, {"name": "digits", "n_train": 300},
                             {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 3,
                              "batch_size": 32, "seed": s}, d / f"m{s}.safetensors",
                             progress=False)
        losses.append(run.metrics["train_loss"])
    return d / "m0.safetensors", d / "m1.safetensors", losses


def test_connect_linear_table_and_verdict(pair, capsys):
    a, b, losses = pair
    L0 = 100.0  # far above every loss on the segment: the straight line passes
    assert main(["connect", str(a), str(b), "--method", "linear", "--threshold", str(L0),
                 "--grid", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "connected: yes" in out and "normalized_length: 1" in out
    assert "num_beads: 2" in out and "position" in out


def test_connect_dss_json_and_out_dir(pair, capsys, tmp_path):
    a, b, losses = pair
    L0 = 1.3 * max(losses)
    rc = main(["connect", str(a), str(b), "--method", "dss", "--threshold", str(L0),
               "--max-depth", "2", "--max-steps", "150", "--batch-size", "64",
               "--lr", "0.003", "--format", "json", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    s = data["summary"]
    assert data["kind"] == "connect" and s["method"] == "dss"
    assert s["connected"] in ("yes", "undetermined")
    assert s["threshold"] == pytest.approx(L0)
    # the end points' levels are the checkpoints' own training losses
    assert s["level_a"] == pytest.approx(losses[0], rel=1e-5)
    assert s["level_b"] == pytest.approx(losses[1], rel=1e-5)
    assert s["num_beads"] == 2 + s["beads_inserted"]
    for name in ("connect.csv", "connect.json", "connect.png"):
        assert (tmp_path / name).stat().st_size > 0
    table = pd.read_csv(tmp_path / "connect.csv")
    assert list(table.columns) == ["position", "segment", "t", "level", "loss", "error", "bead"]
    assert table["level"].max() == pytest.approx(s["max_level"])
    if s["connected"] == "yes":
        assert s["max_level"] <= L0


def test_connect_bezier_csv(pair, capsys):
    a, b, losses = pair
    assert main(["connect", str(a), str(b), "--method", "bezier", "--threshold", "100",
                 "--points", "7", "--max-steps", "20", "--batch-size", "64", "--format", "csv",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("position,segment,t,level") and len(lines) == 1 + 7


@pytest.mark.parametrize("argv, needle", [
    (["--threshold", "1e-9"], "end point a"),
    (["--threshold", "0.5", "--max-depth", "-1"], "max_depth"),
    (["--threshold", "0.5", "--tol", "-0.5"], "tol"),
    (["--threshold", "0.5", "--level", "test_error", "--method", "linear", "--alpha", "2"],
     "alpha"),
])
def test_bad_values_exit_2_with_one_line(pair, capsys, argv, needle):
    a, b, _ = pair
    assert main(["connect", str(a), str(b), *argv, "--quiet"]) == 2
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.strip()]
    assert len(err) == 1 and needle in err[0] and err[0].startswith("deepscope: error")


def test_bad_arguments_exit_2(pair, capsys, tmp_path):
    a, b, _ = pair
    with pytest.raises(SystemExit) as exc:
        main(["connect", str(a), str(b), "--threshold", "-3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a number > 0" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["connect", str(a), str(b), "--threshold", "1", "--method", "walk"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["connect", str(tmp_path / "missing.safetensors"), str(b),
                 "--threshold", "1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_level_sets_experiment_end_to_end(capsys, tmp_path):
    rc = main(["experiment", "level-sets", "--task", "quadratic", "--thresholds", "0.1",
               "--pairs", "1", "--epochs", "30", "--n-train", "200", "--max-depth", "2",
               "--max-steps", "200", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "per threshold" in out and "counterexample" in out
    assert '"connected": "undetermined"' in out  # the swapped-units pair
    for name in ("level_sets.csv", "level_sets.json", "level_sets.png"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "level-sets", "--thresholds", "0.1,-2"])
    assert exc.value.code == 2


def test_demo_section(tmp_path):
    """connection_section on a small demo-like context (the real one uses the demo MLP)."""
    from deepscope.demo import DemoContext
    from deepscope.report.html import Section
    from deepscope.report.landscape_connect import connection_section
    from deepscope.result import Result
    from deepscope._params import state_fingerprint
    from deepscope.workflows import train_and_save
    run = train_and_save({"arch": "mlp", "widths": [32]}, {"name": "digits", "seed": 0},
                         {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 4,
                          "batch_size": 32, "seed": 0}, None, progress=False)
    ctx = DemoContext(out=tmp_path, checkpoint=tmp_path / "m.safetensors", model=run.model,
                      dataset=run.dataset, train_result=Result("train", run.history),
                      progress=False, seed=0)
    f = state_fingerprint(run.model)
    sec = connection_section(ctx)
    assert isinstance(sec, Section) and sec.figures and sec.tables
    assert sec.summary["connected (DSS)"] in ("yes", "undetermined")
    assert sec.summary["straight segment"] in ("yes", "no")
    assert sec.summary["L0 (train loss)"] > 0
    assert state_fingerprint(run.model) == f
