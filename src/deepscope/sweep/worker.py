"""What runs inside an engine's worker: one training task or one probe over one checkpoint.

Both functions take a plain dict (picklable, so it can travel to a process-pool or Ray
worker) and return a plain dict, the *outcome*, that the driver stores in the catalog.
They never raise for a failing task: the exception becomes ``status='failed'`` and a
one-line ``error``, so one bad task cannot stop a sweep. Workers write checkpoints (atomic
rename, see :func:`deepscope._io.atomic_write`) but never the catalog.

Importing this module imports torch and the training stack; the process engine preloads it
in its fork server, so workers start with everything imported.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

from deepscope.result import Result, _jsonable
from deepscope.sweep.catalog import utc_now
from deepscope.workflows import train_and_save

__all__ = ["train_task", "probe_task", "init_worker", "one_line", "failure"]


def init_worker(threads: int | None) -> None:
    """Pin torch's intra-op threads in a worker process (1 per worker by default)."""
    if threads:
        torch.set_num_threads(int(threads))


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (at most 500 characters)."""
    text = str(exc).strip().splitlines()
    msg = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return msg[:500]


def failure(payload: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The outcome of a task whose worker could not run it or died (engine-level failure)."""
    now = utc_now()
    return {"id": payload["id"], "probe": payload.get("probe"),
            "settings_hash": payload.get("settings_hash"), "status": "failed",
            "error": one_line(exc), "started": now, "finished": now, "duration_s": None,
            "host": None}


def _env(payload: dict[str, Any]) -> dict[str, Any]:
    threads = payload.get("threads")
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))
    return {"id": payload["id"], "started": utc_now(), "host": socket.gethostname(),
            "pid": os.getpid()}


def train_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one sweep task and write its checkpoint.

    Payload: ``id``, ``config`` ({"arch", "data", "train"}, completed), ``checkpoint`` (the
    absolute path to write), ``threads`` (torch threads, None: leave as is).
    Outcome: ``id, status, started, finished, duration_s, metrics, error, host, pid``.
    """
    out = _env(payload)
    t0 = time.perf_counter()
    config = payload["config"]
    try:
        result = train_and_save(config["arch"], config["data"], config["train"],
                                payload["checkpoint"], progress=False, include_init=True)
        out.update(status="done", metrics=_jsonable(dict(result.metrics)), error=None)
    except Exception as exc:  # any failure of this task is recorded; the sweep goes on
        out.update(status="failed", metrics=None, error=one_line(exc))
    out.update(finished=utc_now(), duration_s=time.perf_counter() - t0)
    return out


def probe_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one probe on one checkpoint.

    Payload: ``id`` (run id), ``probe`` (name), ``fn`` (the probe callable),
    ``options`` (keyword arguments), ``settings_hash``, ``checkpoint``, ``threads``.
    Outcome: ``id, probe, settings_hash, status, kind, summary, table, result_settings,
    error, duration_s``.
    """
    out = _env(payload)
    out.update(probe=payload["probe"], settings_hash=payload["settings_hash"])
    t0 = time.perf_counter()
    try:
        result = payload["fn"](payload["checkpoint"], **payload["options"])
        if not isinstance(result, Result):
            raise TypeError(f"probe {payload['probe']!r} returned {type(result).__name__}, "
                            f"expected a deepscope.result.Result")
        d = result.to_dict()
        out.update(status="done", kind=d["kind"], summary=d["summary"], table=d["table"],
                   result_settings=d["settings"], error=None)
    except Exception as exc:  # recorded as a failed measurement; the others go on
        out.update(status="failed", error=one_line(exc))
    out.update(finished=utc_now(), duration_s=time.perf_counter() - t0)
    return out
