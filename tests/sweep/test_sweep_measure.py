"""Probes over a zoo (measure_zoo), zoo_table / export_zoo, and the CLI sub-commands."""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil

import pandas as pd
import pytest
from sweep_helpers import broken_probe, param_norms, tiny_spec

from deepscope.errors import ConfigError
from deepscope.sweep import (Catalog, expand_spec, export_zoo, measure_zoo, register_probe,
                             registered_probes, run_sweep, settings_hash, unregister_probe,
                             zoo_table)
from deepscope.sweep.cli_commands import SWEEP_COMMANDS

SPEC = tiny_spec(grid={"train.lr": [0.1, 1e6, 0.05]}, seeds=[0, 1])  # 2 of 6 diverge


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo")
    summary = run_sweep(SPEC, path, progress=False)
    assert (summary.done, summary.failed) == (4, 2)
    return path


@pytest.fixture
def zoo(trained, tmp_path):
    """A private copy of the trained zoo."""
    shutil.copytree(trained, tmp_path / "zoo")
    return tmp_path / "zoo"


@pytest.fixture
def probes():
    register_probe("param-norms", param_norms)
    register_probe("broken", broken_probe)
    yield
    unregister_probe("param-norms")
    unregister_probe("broken")


def test_measure_stores_and_skips(zoo, probes):
    first = measure_zoo(zoo, ["param-norms"], progress=False)
    assert (first.done, first.failed, first.skipped) == (4, 0, 0)  # done runs only
    again = measure_zoo(zoo, ["param-norms"], progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 0, 4)
    other = measure_zoo(zoo, "param-norms", options={"param-norms": {"squared": True}},
                        progress=False)
    assert (other.done, other.skipped) == (4, 0)  # new settings, new measurements
    with Catalog(zoo, create=False) as cat:
        rows = cat.measurements("param-norms", with_tables=True)
        done_ids = {r["id"] for r in cat.runs("done")}
    assert len(rows) == 8 and {r["run_id"] for r in rows} == done_ids
    hashes = {r["settings_hash"] for r in rows}
    assert hashes == {settings_hash({}), settings_hash({"squared": True})}
    row = rows[-1]
    assert row["settings"] == {"squared": True} and row["result_settings"] == {"squared": True}
    assert row["kind"] == "param-norms" and row["error"] is None
    assert [r["name"] for r in row["table"]] == ["fc1.weight", "fc1.bias", "out.weight",
                                                "out.bias"]
    assert row["summary"]["total_norm"] > 0


def test_failing_probe_is_recorded_and_retried(zoo, probes):
    summary = measure_zoo(zoo, ["broken", "param-norms"], progress=False)
    assert (summary.done, summary.failed) == (4, 4)
    assert all(e == "RuntimeError: probe exploded" for e in summary.errors.values())
    assert all(k.endswith("/broken") for k in summary.errors)
    with Catalog(zoo, create=False) as cat:
        assert all(m["error"] for m in cat.measurements("broken"))
    again = measure_zoo(zoo, ["broken", "param-norms"], progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 4, 4)


def test_measure_with_process_pool(zoo, probes):
    summary = measure_zoo(zoo, ["param-norms"], engine="process", workers=2, progress=False)
    assert (summary.done, summary.failed) == (4, 0)
    local = measure_zoo(zoo, ["param-norms"], progress=False)
    assert local.skipped == 4


def test_bad_probe_requests(zoo, probes, tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        measure_zoo(zoo, ["nope"], progress=False)
    with pytest.raises(ConfigError, match="spectra"):
        measure_zoo(zoo, ["param-norms"], options={"spectra": {}}, progress=False)
    register_probe("lambda", lambda path: None)
    try:
        with pytest.raises(ConfigError, match="lambda"):
            measure_zoo(zoo, ["lambda"], engine="process", progress=False)
    finally:
        unregister_probe("lambda")
    with pytest.raises(ConfigError, match="already registered"):
        register_probe("param-norms", broken_probe)
    with pytest.raises(ConfigError, match="catalog"):
        measure_zoo(tmp_path / "empty", ["param-norms"], progress=False)
    assert "spectra" in registered_probes()


@pytest.mark.skipif(importlib.util.find_spec("deepscope.weights.probe") is None,
                    reason="deepscope.weights.probe not available")
def test_spectra_probe(zoo):
    summary = measure_zoo(zoo, ["spectra"], progress=False)
    assert (summary.done, summary.failed) == (4, 0), summary.errors
    table = zoo_table(zoo, status="done")
    spectra_cols = [c for c in table.columns if c.startswith("spectra.")]
    assert spectra_cols and table[spectra_cols].notna().any().all()


def test_zoo_table_columns(zoo, probes):
    measure_zoo(zoo, ["param-norms"], progress=False)
    table = zoo_table(zoo)
    assert len(table) == 6 and list(table.columns[:2]) == ["id", "status"]
    for col in ("arch.widths", "arch.arch", "data.name", "data.n_train", "train.lr",
                "train.seed", "metrics.test_acc", "metrics.train_loss",
                "param-norms.total_norm", "param-norms.nested.layers", "duration_s",
                "started", "finished", "error", "checkpoint"):
        assert col in table.columns, col
    assert set(table["status"]) == {"done", "failed"}
    assert (table["arch.widths"] == (16,)).all()  # lists become tuples
    failed = table[table["status"] == "failed"]
    assert failed["error"].str.startswith("TrainingDivergedError").all()
    assert failed["param-norms.total_norm"].isna().all()
    assert failed["checkpoint"].isna().all()
    done = table[table["status"] == "done"]
    assert done["param-norms.total_norm"].gt(0).all()
    ids = {t.id for t in expand_spec(SPEC)}
    assert set(table["id"]) == ids
    varying = zoo_table(zoo, varying_only=True, status="done")
    hyper = [c for c in varying.columns if c.split(".")[0] in ("arch", "data", "train")]
    assert sorted(hyper) == ["train.lr", "train.seed"]
    assert len(varying) == 4


def test_export_csv_and_parquet(zoo, tmp_path):
    path = export_zoo(zoo, tmp_path / "runs.csv")
    back = pd.read_csv(path)
    assert len(back) == 6 and set(back["arch.widths"]) == {"[16]"}
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(ConfigError, match="pyarrow"):
            export_zoo(zoo, tmp_path / "runs.parquet")
    else:
        assert len(pd.read_parquet(export_zoo(zoo, tmp_path / "runs.parquet"))) == 6
    with pytest.raises(ConfigError, match=".xlsx"):
        export_zoo(zoo, tmp_path / "runs.xlsx")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="deepscope")
    sub = parser.add_subparsers(dest="command")
    for add in SWEEP_COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_commands(tmp_path, capsys, probes):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec(grid={"train.lr": [0.1, 0.05]})))
    zoo = tmp_path / "zoo"
    assert _cli(["sweep", str(spec), "--zoo", str(zoo), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 tasks" in out and "train.lr=0.1" in out and not zoo.exists()
    assert _cli(["sweep", str(spec), "--zoo", str(zoo), "--quiet", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 2
    assert _cli(["measure", str(zoo), "--probe", "param-norms", "--set",
                 "param-norms.squared=true", "--quiet"]) == 0
    assert "2 done" in capsys.readouterr().out
    assert _cli(["zoo", str(zoo), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "param-norms.total_norm" in csv.splitlines()[0]
    assert _cli(["zoo", str(zoo)]) == 0
    table = capsys.readouterr().out
    assert "train.lr" in table and "train.seed" not in table
    with pytest.raises(SystemExit):
        _cli(["measure", str(zoo), "--set", "squared"])
