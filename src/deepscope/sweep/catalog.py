"""The run catalog of a zoo: ``ZOO_DIR/catalog.sqlite`` (SQLite, WAL journal).

Tables::

    runs(id TEXT PRIMARY KEY,      -- the task's content hash (deepscope.sweep.spec.config_id)
         config JSON,              -- the completed {"arch", "data", "train"}
         status TEXT,              -- 'pending' | 'running' | 'done' | 'failed' ('running':
                                   -- handed to an engine, outcome not recorded yet; after a
                                   -- crash of the driver such rows are simply run again)
         started, finished TEXT,   -- ISO 8601 UTC, as measured by the worker
         duration_s REAL,          -- wall seconds of the task inside the worker
         metrics JSON,             -- final train/test metrics (TrainResult.metrics)
         error TEXT,               -- one line, for failed runs
         checkpoint TEXT,          -- relative to the zoo: runs/<id>.safetensors
         attempts INTEGER,         -- how many times a driver handed the task to an engine
         host TEXT)                -- where it ran
    measurements(run_id, probe, settings_hash, settings JSON, kind, summary JSON,
                 "table" JSON, result_settings JSON, error, created, duration_s,
                 PRIMARY KEY (run_id, probe, settings_hash))
    meta(key PRIMARY KEY, value)   -- schema version

Only the driver process writes (workers return their results to it); every change is one
transaction, so a crash (even SIGKILL) leaves each row either before or after a change.
WAL lets readers (``zoo_table``, a second shell) read while a sweep writes. With
``synchronous=NORMAL`` a committed row survives a crash of the process; only a power loss
can undo the last commits (the affected tasks are then simply run again).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepscope.errors import ConfigError

__all__ = ["Catalog", "CATALOG_NAME", "RUNS_DIR", "SCHEMA_VERSION", "utc_now"]

CATALOG_NAME = "catalog.sqlite"
RUNS_DIR = "runs"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    config JSON NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    started TEXT,
    finished TEXT,
    duration_s REAL,
    metrics JSON,
    error TEXT,
    checkpoint TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    host TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    run_id TEXT NOT NULL REFERENCES runs(id),
    probe TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    settings JSON NOT NULL,
    kind TEXT,
    summary JSON,
    "table" JSON,
    result_settings JSON,
    error TEXT,
    created TEXT NOT NULL,
    duration_s REAL,
    PRIMARY KEY (run_id, probe, settings_hash)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Catalog:
    """The SQLite catalog of one zoo directory (use as a context manager).

    ``create=False`` refuses a directory without a catalog (``ConfigError``) instead of
    making one.
    """

    def __init__(self, zoo_dir: str | Path, *, create: bool = True):
        self.zoo_dir = Path(zoo_dir)
        self.path = self.zoo_dir / CATALOG_NAME
        if not create and not self.path.is_file():
            raise ConfigError(f"zoo_dir {str(self.zoo_dir)!r}: no {CATALOG_NAME}, so not a "
                              f"deepscope zoo (make one with run_sweep / `deepscope sweep`)")
        if create:
            (self.zoo_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if create:
                self._create_schema()
            self._check_version()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(f"zoo_dir {str(self.zoo_dir)!r}: {CATALOG_NAME} is not a "
                              f"readable SQLite catalog ({exc})") from None

    # -- plumbing ---------------------------------------------------------------------------

    def _create_schema(self) -> None:
        # executescript commits on its own; every statement is idempotent.
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)",
                         (SCHEMA_VERSION,))

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None or row["value"] != SCHEMA_VERSION:
            got = None if row is None else row["value"]
            raise ConfigError(f"zoo_dir {str(self.zoo_dir)!r}: catalog schema {got!r}, this "
                              f"deepscope reads schema {SCHEMA_VERSION!r}")

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> "Catalog._Tx":
        return Catalog._Tx(self._db)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------------

    @staticmethod
    def checkpoint_name(run_id: str) -> str:
        """Where a run's checkpoint lives, relative to the zoo directory."""
        return f"{RUNS_DIR}/{run_id}.safetensors"

    def add_runs(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Insert ``(id, config)`` rows as 'pending'; existing rows are left alone."""
        with self._transaction() as db:
            db.executemany("INSERT OR IGNORE INTO runs(id, config, status) VALUES (?, ?, "
                           "'pending')", [(i, _dumps(c)) for i, c in items])

    def mark_running(self, ids: Iterable[str]) -> None:
        """Status 'running' and one more attempt, for runs handed to an engine."""
        with self._transaction() as db:
            db.executemany("UPDATE runs SET status='running', attempts=attempts+1, error=NULL "
                           "WHERE id=?", [(i,) for i in ids])

    def record_run(self, outcome: Mapping[str, Any]) -> None:
        """Store a worker's outcome (status 'done' or 'failed', times, metrics, error)."""
        done = outcome.get("status") == "done"
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, started=?, finished=?, duration_s=?, metrics=?, "
                "error=?, checkpoint=?, host=? WHERE id=?",
                ("done" if done else "failed", outcome.get("started"),
                 outcome.get("finished"), outcome.get("duration_s"),
                 _dumps(outcome.get("metrics")), None if done else outcome.get("error"),
                 self.checkpoint_name(outcome["id"]) if done else None,
                 outcome.get("host"), outcome["id"]))

    def _run_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["config"] = _loads(d["config"])
        d["metrics"] = _loads(d["metrics"])
        return d

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run's row as a dict (config and metrics decoded), or None."""
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else self._run_dict(row)

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """All runs (or those with ``status``), oldest first."""
        if status is None:
            rows = self._db.execute("SELECT * FROM runs ORDER BY rowid").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM runs WHERE status=? ORDER BY rowid",
                                    (status,)).fetchall()
        return [self._run_dict(r) for r in rows]

    def statuses(self) -> dict[str, str]:
        """``{run id: status}`` for every run."""
        return {r["id"]: r["status"] for r in self._db.execute("SELECT id, status FROM runs")}

    # -- measurements -----------------------------------------------------------------------

    def measured(self, probe: str, settings_hash: str) -> set[str]:
        """Ids of runs that already have a successful ``probe`` result with these settings."""
        rows = self._db.execute(
            "SELECT run_id FROM measurements WHERE probe=? AND settings_hash=? AND error IS "
            "NULL", (probe, settings_hash))
        return {r["run_id"] for r in rows}

    def record_measurement(self, outcome: Mapping[str, Any], settings: Mapping[str, Any]
                           ) -> None:
        """Store (or replace) one probe result of one run."""
        with self._transaction() as db:
            db.execute(
                'INSERT OR REPLACE INTO measurements(run_id, probe, settings_hash, settings, '
                'kind, summary, "table", result_settings, error, created, duration_s) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (outcome["id"], outcome["probe"], outcome["settings_hash"],
                 _dumps(dict(settings)), outcome.get("kind"), _dumps(outcome.get("summary")),
                 _dumps(outcome.get("table")), _dumps(outcome.get("result_settings")),
                 outcome.get("error"), utc_now(), outcome.get("duration_s")))

    def measurements(self, probe: str | None = None, *, with_tables: bool = False
                     ) -> list[dict[str, Any]]:
        """Stored probe results, oldest first (``table`` decoded only with ``with_tables``)."""
        cols = ('run_id, probe, settings_hash, settings, kind, summary, result_settings, '
                'error, created, duration_s' + (', "table"' if with_tables else ''))
        sql = f"SELECT {cols} FROM measurements"
        args: tuple = ()
        if probe is not None:
            sql += " WHERE probe=?"
            args = (probe,)
        out = []
        for row in self._db.execute(sql + " ORDER BY created", args):
            d = dict(row)
            for key in ("settings", "summary", "result_settings", "table"):
                if key in d:
                    d[key] = _loads(d[key])
            out.append(d)
        return out
