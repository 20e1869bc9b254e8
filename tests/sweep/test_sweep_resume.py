"""Kill a sweep with SIGKILL mid-way (a real subprocess), re-run it, and check that what was
done is not recomputed, the rest is finished, and nothing is left corrupt."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from sweep_helpers import tiny_spec

import deepscope
from deepscope.sweep import Catalog, expand_spec, run_sweep

# 6 tasks of a few tenths of a second each, so the kill lands between tasks 1 and 6
SPEC = tiny_spec(seeds=[0, 1, 2, 3, 4, 5])
SPEC["base"]["arch"]["widths"] = [64]
SPEC["base"]["data"]["n_train"] = 1000
SPEC["base"]["train"]["epochs"] = 8

DRIVER = ("import sys; from deepscope.sweep import run_sweep; "
          "run_sweep(sys.argv[1], sys.argv[2], engine='local', progress=False)")


def _done_rows(catalog) -> dict[str, tuple]:
    try:
        db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT id, started, finished, attempts FROM runs "
                              "WHERE status='done'").fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return {}
    return {r[0]: r[1:] for r in rows}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_resume_after_sigkill(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    zoo = tmp_path / "zoo"
    catalog = zoo / "catalog.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec_path), str(zoo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not _done_rows(catalog):
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the sweep never finished a task"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = _done_rows(catalog)
    assert 1 <= len(before) < 6, "killed too late to test resuming"
    mtimes = {i: (zoo / "runs" / f"{i}.safetensors").stat().st_mtime_ns for i in before}

    summary = run_sweep(spec_path, zoo, progress=False)
    assert (summary.done, summary.failed, summary.skipped) == (6 - len(before), 0, len(before))

    ids = {t.id for t in expand_spec(SPEC)}
    with Catalog(zoo, create=False) as cat:
        rows = {r["id"]: r for r in cat.runs()}
    assert set(rows) == ids and all(r["status"] == "done" for r in rows.values())
    for i in before:  # trained exactly once: same timestamps, one attempt, file untouched
        r = rows[i]
        assert (r["started"], r["finished"], r["attempts"]) == before[i]
        assert r["attempts"] == 1
        assert (zoo / "runs" / f"{i}.safetensors").stat().st_mtime_ns == mtimes[i]
    for i in ids - set(before):  # handed out by the killed driver, trained by the second one
        assert rows[i]["attempts"] == 2
        assert rows[i]["started"] > max(b[1] for b in before.values())
    for i in ids:
        ck = deepscope.load(zoo / "runs" / f"{i}.safetensors")
        assert ck.metrics["epochs_run"] == 8
    assert sorted(p.name for p in (zoo / "runs").iterdir()) == sorted(
        f"{i}.safetensors" for i in ids)  # no temporary files left
    db = sqlite3.connect(catalog)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
