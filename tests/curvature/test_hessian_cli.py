"""The ``hessian`` sub-command functions (parsing + printing), on a small trained checkpoint."""
import argparse
import json

import pytest

from deepscope.curvature.cli_commands import _add_hessian


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from deepscope.workflows import train_and_save
    path = tmp_path_factory.mktemp("hess") / "model.safetensors"
    train_and_save({"arch": "mlp", "widths": [8]}, {"name": "digits", "n_train": 200},
                   {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 50, "seed": 0},
                   path, progress=False)
    return path


def parse(*argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    _add_hessian(sub)
    return parser.parse_args(["hessian", *map(str, argv)])


def test_table_output(checkpoint, capsys):
    args = parse(checkpoint, "--k", "2", "--which", "top,trace", "--probes", "9", "--quiet")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "eigenvalue" in out and "trace" in out and "top_eigenvalue:" in out


def test_json_and_out_dir(checkpoint, capsys, tmp_path):
    args = parse(checkpoint, "--k", "1", "--probes", "6", "--density-runs", "1",
                 "--lanczos-steps", "5", "--per-layer", "--max-samples", "100",
                 "--format", "json", "--out", tmp_path, "--quiet")
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "hessian" and data["summary"]["num_samples"] == 100
    assert {r["block"] for r in data["table"]} == {"all", "fc1", "out"}  # the MLP's modules
    assert (tmp_path / "hessian.csv").exists() and (tmp_path / "density.csv").exists()
    assert (tmp_path / "density.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "summary.json").exists()


def test_bad_which_is_a_parse_error(checkpoint):
    with pytest.raises(SystemExit):
        parse(checkpoint, "--which", "curvature")


def test_start_option(checkpoint, capsys):
    args = parse(checkpoint, "--k", "1", "--which", "top", "--start", "output-layer",
                 "--rtol", "1e-3", "--format", "json", "--quiet")
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["start"] == "output-layer" and summary["start_hvps"] > 0
    with pytest.raises(SystemExit):
        parse(checkpoint, "--start", "middle")
    args = parse(checkpoint, "--k", "1", "--which", "top", "--order", "magnitude",
                 "--format", "json", "--quiet")
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["order"] == "magnitude"


def test_vectors_file(checkpoint, capsys, tmp_path):
    from safetensors import safe_open

    from deepscope.errors import ConfigError
    from deepscope.train.checkpoint import load_checkpoint
    path = tmp_path / "top.safetensors"
    args = parse(checkpoint, "--k", "2", "--which", "top", "--vectors", path,
                 "--format", "json", "--quiet")
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    params = dict(load_checkpoint(checkpoint).model.named_parameters())
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
        assert keys == {f"v{i}.{n}" for i in range(2) for n in params}
        v0 = [f.get_tensor(f"v0.{n}") for n in params]
    assert json.loads(meta["eigenvalues"]) == pytest.approx(summary["eigenvalues"])
    assert float(sum((t.double() ** 2).sum() for t in v0)) == pytest.approx(1.0, abs=1e-5)
    for bad in (["--which", "trace", "--vectors", path], ["--vectors", tmp_path / "v.txt"]):
        args = parse(checkpoint, *bad, "--quiet")
        with pytest.raises(ConfigError, match="--vectors"):
            args.func(args)
