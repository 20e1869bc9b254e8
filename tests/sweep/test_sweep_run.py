"""run_sweep with the local engine: outputs, catalog rows, skipping, failures, the zoo lock."""
from __future__ import annotations

import sqlite3

import pytest
import torch
from sweep_helpers import tiny_spec, weights_of

import deepscope
from deepscope.errors import ConfigError
from deepscope.sweep import Catalog, expand_spec, run_sweep
from deepscope.sweep.runner import zoo_lock

SPEC = tiny_spec(grid={"train.lr": [0.1, 0.05]}, seeds=[0, 1])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo")
    summary = run_sweep(SPEC, path, progress=False)
    assert (summary.done, summary.failed, summary.skipped) == (4, 0, 0)
    return path


def test_outputs_and_catalog_rows(zoo):
    tasks = expand_spec(SPEC)
    with Catalog(zoo, create=False) as cat:
        rows = {r["id"]: r for r in cat.runs()}
    assert set(rows) == {t.id for t in tasks}
    for t in tasks:
        row = rows[t.id]
        assert row["status"] == "done" and row["error"] is None and row["attempts"] == 1
        assert row["config"] == t.config
        assert row["checkpoint"] == f"runs/{t.id}.safetensors"
        assert row["duration_s"] > 0 and row["started"] < row["finished"]
        ck = deepscope.load(zoo / row["checkpoint"])
        assert ck.arch == t.config["arch"] and ck.train_config == t.config["train"]
        assert ck.dataset_spec == t.config["data"]
        assert ck.init_params is not None  # include_init=True
        assert ck.metrics["test_acc"] == pytest.approx(row["metrics"]["test_acc"])
    db = sqlite3.connect(zoo / "catalog.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    for col in ("id", "config", "status", "started", "finished", "duration_s", "metrics",
                "error", "checkpoint"):
        assert col in cols
    db.close()


def test_rerun_skips_done_and_redoes_missing_checkpoints(zoo):
    again = run_sweep(SPEC, zoo, progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 0, 4)
    victim = expand_spec(SPEC)[0].id
    path = zoo / "runs" / f"{victim}.safetensors"
    before = weights_of(path)
    path.unlink()
    (zoo / "runs" / f".{victim}.safetensors.abc.tmp").write_bytes(b"half")  # a killed writer
    third = run_sweep(SPEC, zoo, progress=False)
    assert (third.done, third.failed, third.skipped) == (1, 0, 3)
    after = weights_of(path)
    assert all(torch.equal(before[k], after[k]) for k in before)  # same seed, same weights
    assert not list((zoo / "runs").glob(".*.tmp"))


def test_failing_task_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = tiny_spec(grid={"train.lr": [0.1, 1e6, 0.05]})
    summary = run_sweep(spec, tmp_path, progress=False)
    assert (summary.done, summary.failed, summary.skipped) == (2, 1, 0)
    bad = [t for t in expand_spec(spec) if t.config["train"]["lr"] == 1e6][0]
    assert list(summary.errors) == [bad.id]
    with Catalog(tmp_path, create=False) as cat:
        row = cat.run(bad.id)
    assert row["status"] == "failed" and row["checkpoint"] is None
    assert row["error"].startswith("TrainingDivergedError: ") and "\n" not in row["error"]
    assert not (tmp_path / "runs" / f"{bad.id}.safetensors").exists()
    # failed tasks are retried by default, skipped with retry_failed=False
    assert run_sweep(spec, tmp_path, progress=False, retry_failed=False).skipped == 3
    again = run_sweep(spec, tmp_path, progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 1, 2)
    with Catalog(tmp_path, create=False) as cat:
        assert cat.run(bad.id)["attempts"] == 2


def test_one_writer_per_zoo(tmp_path):
    with zoo_lock(tmp_path):
        with pytest.raises(ConfigError, match="another sweep"):
            run_sweep(tiny_spec(), tmp_path, progress=False)
    assert run_sweep(tiny_spec(), tmp_path, progress=False).done == 1


def test_engine_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="engine"):
        run_sweep(tiny_spec(), tmp_path, engine="dask", progress=False)
    with pytest.raises(ConfigError, match="workers"):
        run_sweep(tiny_spec(), tmp_path, engine="process", workers=0, progress=False)
    with pytest.raises(ConfigError, match="address"):
        run_sweep(tiny_spec(), tmp_path, engine="local", address="auto", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="zoo_dir"):
        run_sweep(tiny_spec(), tmp_path / "file", progress=False)
    with pytest.raises(ConfigError, match="catalog"):
        Catalog(tmp_path / "nothing", create=False)
