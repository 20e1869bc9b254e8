"""The CLI end to end, in a subprocess, as a user would type it."""
import json
import os
import subprocess
import sys

import pytest

ENV = dict(os.environ, MPLBACKEND="Agg", DEEPSCOPE_DEBUG="")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepscope.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model.safetensors"
    r = run("train", "--arch", "mlp", "--widths", "32,16", "--dataset", "digits",
            "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--batch-size", "32",
            "--epochs", "3", "--seed", "0", "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out, r


def test_train_writes_checkpoint(trained):
    out, r = trained
    assert out.exists()
    assert "wrote" in r.stdout and "test_acc" in r.stdout


def test_info_table_and_json(trained):
    out, _ = trained
    r = run("info", out)
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stdout and "mlp" in r.stdout
    r = run("info", out, "--format", "json")
    info = json.loads(r.stdout)
    assert info["arch"]["widths"] == [32, 16]
    assert info["parameters"] == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert info["dataset"]["name"] == "digits"
    assert info["train"]["optimizer"] == "sgd"
    assert info["has_init_weights"] is True
    assert 0.0 <= info["metrics"]["test_acc"] <= 1.0


@pytest.mark.parametrize("args, needle", [
    (["train", "--dataset", "nope", "-o", "x.safetensors", "--quiet"], "nope"),
    (["train", "--arch", "transformerx", "-o", "x.safetensors", "--quiet"], "transformerx"),
    (["train", "--optimizer", "sgdd", "-o", "x.safetensors", "--quiet"], "sgdd"),
    (["train", "--widths", "a,b", "-o", "x.safetensors"], "integers"),
    (["info", "missing.safetensors"], "no such file"),
    (["train", "--epochs", "2", "--lr", "1e6", "--no-standardize", "-o", "d.safetensors",
      "--quiet"], "diverged"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert needle in lines[0]


def test_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    r = run("info", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(bad.name) in r.stderr


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("train", "info", "demo"):
        assert cmd in r.stdout


def test_spectra_table_json_csv_and_out(trained, tmp_path):
    out, _ = trained
    r = run("spectra", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "fc1" in r.stdout and "phase" in r.stdout and "alpha:" in r.stdout
    r = run("spectra", out, "--quiet", "--format", "json", "--bootstrap", "20",
            "--out", tmp_path / "spec")
    d = json.loads(r.stdout)
    assert [row["layer"] for row in d["table"]] == ["fc1", "fc2", "out"]
    assert d["table"][0]["type"] == "Linear"
    assert (tmp_path / "spec" / "spectra.csv").exists()
    assert (tmp_path / "spec" / "figures" / "overview.png").exists()
    assert (tmp_path / "spec" / "figures" / "esd_fc1.png").exists()
    r = run("spectra", out, "--quiet", "--format", "csv", "--layers", "fc1")
    assert r.stdout.splitlines()[0].startswith("layer,type,N,M")
    assert len(r.stdout.strip().splitlines()) == 2


def test_spectra_bad_inputs_exit_2(tmp_path):
    import torch
    from torch import nn
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(20, 20)), path)
    for args, needle in (([path], "trust-pickle"), ([tmp_path / "nope.pt"], "no such file"),
                         ([path, "--trust-pickle", "--layers", "zzz"], "zzz")):
        r = run("spectra", *args, "--quiet")
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and needle in r.stderr
    r = run("spectra", path, "--trust-pickle", "--quiet", "--format", "json")
    assert r.returncode == 0, r.stderr
