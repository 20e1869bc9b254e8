"""``run_sweep``: spec -> tasks -> engine -> checkpoints in ``ZOO_DIR/runs`` + catalog rows.

A zoo directory holds ``catalog.sqlite`` (see :mod:`deepscope.sweep.catalog`) and
``runs/<task id>.safetensors`` (deepscope checkpoints with the initial weights). Sweeps are
resumable: a task is skipped when its catalog status is ``done`` *and* its checkpoint is on
disk and readable; everything else (never run, failed, or 'running' when a previous driver
was killed) is run again. Because task ids are content hashes, a later or larger spec over the
same zoo reuses every run it shares with an earlier one.

Crash safety: checkpoints are written by atomic rename, and each catalog change is one
transaction written by the driver after the worker has returned, so a SIGKILL at any moment
leaves at worst a task marked 'running' (re-run next time) and an orphaned temporary file
(``runs/.*.tmp``, removed by the next run). One driver at a time may write a zoo: an
advisory lock (``ZOO_DIR/.lock``, ``fcntl.flock``; released by the OS when the process dies)
makes a second ``run_sweep``/``measure_zoo`` on the same zoo fail fast with ``ConfigError``.
A worker process that dies (the OOM killer, a segfault) breaks a process pool: the tasks it
had not finished are recorded as failed and run again by the next call.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError
from deepscope.sweep.catalog import RUNS_DIR, Catalog
from deepscope.sweep.engines import check_engine, execute, ray_session
from deepscope.sweep.spec import expand_spec

__all__ = ["run_sweep", "SweepSummary", "zoo_lock", "zoo_path", "engine_session",
           "checkpoint_ok"]


@dataclass
class SweepSummary:
    """What a sweep (or a ``measure_zoo`` pass) did.

    Attributes:
        done: tasks that finished now.
        failed: tasks that raised (their one-line errors are in ``errors``, by id).
        skipped: tasks already done in the zoo (not recomputed).
        duration_s: wall seconds of the whole call (validation included).
        zoo_dir: the zoo.
        errors: ``{task id: one-line error}`` of the failed tasks.
        task_seconds: the sum of the tasks' own durations inside the workers.
    """

    done: int
    failed: int
    skipped: int
    duration_s: float
    zoo_dir: Path | None = None
    errors: dict[str, str] = field(default_factory=dict)
    task_seconds: float = 0.0

    @property
    def total(self) -> int:
        """done + failed + skipped."""
        return self.done + self.failed + self.skipped

    def __str__(self) -> str:
        return (f"{self.done} done, {self.failed} failed, {self.skipped} skipped "
                f"in {self.duration_s:.1f} s")


@contextlib.contextmanager
def zoo_lock(zoo_dir: Path) -> Iterator[None]:
    """Hold the zoo's writer lock (no-op where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer per zoo is on the user
        yield
        return
    zoo_dir.mkdir(parents=True, exist_ok=True)
    with open(zoo_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"zoo_dir {str(zoo_dir)!r}: another sweep or measure_zoo is "
                              f"writing this zoo right now; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def engine_session(engine: str, address: str | None, workers: int):
    """The context an engine needs around :func:`~deepscope.sweep.engines.execute`."""
    return ray_session(address, workers) if engine == "ray" else contextlib.nullcontext()


def zoo_path(zoo_dir: Any) -> Path:
    """``zoo_dir`` as a Path; a path that exists but is no directory raises ConfigError."""
    if not isinstance(zoo_dir, (str, Path)) or not str(zoo_dir):
        raise ConfigError(f"zoo_dir must be a directory path, got {zoo_dir!r}")
    path = Path(zoo_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"zoo_dir {str(path)!r}: exists and is not a directory")
    return path


def _remove_stale_temporaries(zoo: Path) -> None:
    # left by a writer killed between creating its temporary file and renaming it
    for tmp in (zoo / RUNS_DIR).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def checkpoint_ok(path: Path) -> bool:
    """The checkpoint exists and its safetensors header is a deepscope checkpoint's."""
    from deepscope.train.checkpoint import is_checkpoint
    return path.is_file() and is_checkpoint(path)


def run_sweep(spec: Mapping[str, Any] | str | Path, zoo_dir: str | Path, *,
              engine: str = "local", workers: int | None = None, address: str | None = None,
              task_cpus: float = 1, task_gpus: float = 0, threads: int | None = None,
              retry_failed: bool = True, progress: bool = True) -> SweepSummary:
    """Train every task of ``spec`` into ``zoo_dir``; resume where a previous run stopped.

    Args:
        spec: a sweep spec dict, or the path of a ``.toml``/``.json`` file (format:
            :mod:`deepscope.sweep.spec`). It is validated completely before any work.
        zoo_dir: the zoo directory (created if needed).
        engine: ``"local"`` (sequential, in this process), ``"process"`` (process pool) or
            ``"ray"`` (see :mod:`deepscope.sweep.engines`).
        workers: parallel workers (default: the CPUs available; Ray: CPUs of the local
            cluster it starts when neither Ray is initialized nor ``address`` given).
        address: a Ray cluster to connect to (engine ``"ray"`` only).
        task_cpus, task_gpus: Ray resources per task (``num_cpus``/``num_gpus``).
        threads: torch threads per task (default: the caller's for ``"local"``, 1 for
            ``"process"``, ``task_cpus`` for ``"ray"``). Weights are bitwise equal across
            engines when the thread counts are equal.
        retry_failed: run tasks recorded as failed again (default); False skips them.
        progress: show a progress bar over tasks (with ETA).

    Returns:
        :class:`SweepSummary` (done, failed, skipped, duration_s, errors).
    """
    t0 = time.perf_counter()
    n_workers = check_engine(engine, workers, address, threads=threads,
                             task_cpus=task_cpus, task_gpus=task_gpus)
    if not isinstance(retry_failed, bool):
        raise ConfigError(f"retry_failed must be True or False, got {retry_failed!r}")
    zoo = zoo_path(zoo_dir)
    tasks = expand_spec(spec)

    from deepscope.sweep.worker import train_task

    summary = SweepSummary(0, 0, 0, 0.0, zoo)
    with zoo_lock(zoo), Catalog(zoo) as cat:
        _remove_stale_temporaries(zoo)
        cat.add_runs((t.id, t.config) for t in tasks)
        status = cat.statuses()
        todo = []
        for t in tasks:
            ckpt = zoo / Catalog.checkpoint_name(t.id)
            if status.get(t.id) == "done" and checkpoint_ok(ckpt):
                summary.skipped += 1
            elif status.get(t.id) == "failed" and not retry_failed:
                summary.skipped += 1
            else:
                todo.append({"id": t.id, "config": t.config, "checkpoint": str(ckpt.resolve())})
        bar = progress_bar(total=len(todo), enabled=progress, desc=f"sweep [{engine}]",
                           unit="run")
        session = engine_session(engine, address, n_workers) if todo else contextlib.nullcontext()
        with session, bar:
            cat.mark_running(p["id"] for p in todo)
            for outcome in execute(train_task, todo, engine=engine, workers=n_workers,
                                   task_cpus=task_cpus, task_gpus=task_gpus,
                                   threads=threads):
                cat.record_run(outcome)
                if outcome.get("status") == "done":
                    summary.done += 1
                else:
                    summary.failed += 1
                    summary.errors[outcome["id"]] = outcome.get("error") or "unknown error"
                summary.task_seconds += outcome.get("duration_s") or 0.0
                bar.update(1)
                bar.set_postfix(done=summary.done, failed=summary.failed,
                                skipped=summary.skipped, refresh=False)
    summary.duration_s = time.perf_counter() - t0
    return summary
