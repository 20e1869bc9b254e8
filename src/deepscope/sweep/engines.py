"""Engines: run a worker function over payloads and yield the outcomes as they finish.

- ``"local"``: one after the other, in this process (torch threads as the caller set them,
  unless ``threads`` is given; the caller's setting is restored afterwards).
- ``"process"``: a :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` processes
  (``forkserver`` start method where the platform has it, else ``spawn``; never plain fork,
  which is unsafe after torch has started threads). The fork server preloads torch and the
  training stack once, so workers start in milliseconds. Each worker uses 1 torch thread
  (or ``threads``).
- ``"ray"``: each payload is a Ray task (``num_cpus``/``num_gpus`` per task from
  ``task_cpus``/``task_gpus``; torch threads = ``task_cpus`` or ``threads``). Ray is used as
  found when it is already initialized; otherwise :func:`ray_session` connects to
  ``address`` or starts a local cluster with ``num_cpus=workers``, and shuts Ray down
  afterwards (only then).

Bitwise reproducibility: on CPU the same config gives the same weights on every engine as
long as the tasks run with the same number of torch threads (reductions are split by
thread); the defaults differ (local: the caller's setting, process: 1), so pass ``threads``
to compare engines.

Outcomes go back to the driver, which alone writes the catalog. Multi-node Ray clusters:
workers write checkpoints to the zoo path the driver gives them, so the zoo directory must be
on a filesystem shared by all nodes (NFS, Lustre, ...) at the same path, and deepscope must be
installed on every node.

Process pool and (local) Ray workers import the driver's ``__main__`` module the way
:mod:`multiprocessing` does: a script that calls ``run_sweep`` must guard its entry point with
``if __name__ == "__main__":``. The fork server's preload list is process-wide
(``set_forkserver_preload``); it only adds ``deepscope.sweep.worker``.

A worker function catches its task's exceptions itself; what reaches the engine is a crash
of the machinery (a worker process killed, an unpicklable payload, a Ray node lost), which
becomes a failed outcome for that payload, built by :func:`deepscope.sweep.worker.failure`.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from deepscope.errors import ConfigError, unknown_name

__all__ = ["ENGINES", "execute", "ray_session", "check_engine", "default_workers"]

ENGINES = ("local", "process", "ray")

Outcome = dict[str, Any]


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _positive_or_none(key: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ConfigError(f"{key} must be a positive integer or None, got {value!r}")


def check_engine(engine: Any, workers: Any, address: Any = None, *, threads: Any = None,
                 task_cpus: Any = 1, task_gpus: Any = 0) -> int:
    """Validate the engine options; return the number of workers to use."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise unknown_name("engine", engine, ENGINES)
    _positive_or_none("workers", workers)
    _positive_or_none("threads", threads)
    for key, val in (("task_cpus", task_cpus), ("task_gpus", task_gpus)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
            raise ConfigError(f"{key} must be a number >= 0, got {val!r}")
    if address is not None and engine != "ray":
        raise ConfigError(f"address applies to engine 'ray' only, got engine {engine!r}")
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"address must be a string like 'auto' or 'ray://host:10001', "
                          f"got {address!r}")
    if engine == "local":
        return 1
    return workers or default_workers()


def execute(fn: Callable[[dict[str, Any]], Outcome], payloads: Sequence[dict[str, Any]], *,
            engine: str, workers: int, task_cpus: float = 1, task_gpus: float = 0,
            threads: int | None = None) -> Iterator[Outcome]:
    """Run ``fn`` on every payload with ``engine``; yield outcomes in completion order.

    ``threads``: torch intra-op threads per task. Default: the caller's setting for
    ``"local"``, 1 for ``"process"``, ``task_cpus`` (at least 1) for ``"ray"``. CPU results
    are bitwise reproducible across engines when the tasks run with the same number of
    threads (reductions are split by thread), so pass e.g. ``threads=1`` to compare engines.

    For ``"ray"`` the caller holds a :func:`ray_session`. Closing the iterator early (an
    exception or KeyboardInterrupt in the driver) cancels what has not started.
    """
    if not payloads:
        return iter(())
    if engine == "local":
        return _local(fn, payloads, threads)
    if engine == "process":
        return _process(fn, payloads, workers, threads or 1)
    if engine == "ray":
        return _ray(fn, payloads, task_cpus, task_gpus, threads or max(1, int(task_cpus)))
    raise unknown_name("engine", engine, ENGINES)


def _local(fn, payloads, threads) -> Iterator[Outcome]:
    import torch

    before = torch.get_num_threads()
    try:
        for p in payloads:
            yield fn({**p, "threads": threads})
    finally:
        if torch.get_num_threads() != before:  # leave the caller's setting as it was
            torch.set_num_threads(before)


# ----------------------------------------------------------------------------- process pool

# Imported once by the fork server, so that every worker forked from it starts warm:
# torch and the training stack; torch._dynamo, which torch.optim imports on the first
# optimizer construction (1-2 s); sklearn.datasets, which serves the built-in digits data.
# The fork server lives as long as the driver, so later pools (measure_zoo after run_sweep,
# repeated sweeps) skip all of it. Modules that fail to import are skipped.
_PRELOAD = ["deepscope.sweep.worker", "torch._dynamo", "sklearn.datasets"]


def _mp_context():
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # ignored for modules that fail to import
        return ctx
    return mp.get_context("spawn")


def _process(fn, payloads, workers, threads) -> Iterator[Outcome]:
    from deepscope.sweep.worker import failure, init_worker

    pool = ProcessPoolExecutor(max_workers=min(workers, len(payloads)), mp_context=_mp_context(),
                               initializer=init_worker, initargs=(threads,))
    try:
        pending = {pool.submit(fn, {**p, "threads": threads}): p for p in payloads}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                payload = pending.pop(fut)
                try:
                    yield fut.result()
                except Exception as exc:  # pool broken (worker killed), pickling failed
                    yield failure(payload, exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- Ray

def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("engine 'ray' needs Ray: pip install 'deepscope[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """Use the running Ray session, or start one (and shut it down afterwards).

    ``address=None`` starts a local cluster with ``num_cpus=workers``; otherwise connects
    (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``). Ray stays up when it was already
    initialized by the caller.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"address {address!r}: cannot connect to a Ray cluster "
                              f"({str(exc).splitlines()[0] if str(exc) else exc})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _ray(fn, payloads, task_cpus, task_gpus, threads) -> Iterator[Outcome]:
    from deepscope.sweep.worker import failure

    ray = _import_ray()
    remote = ray.remote(fn).options(num_cpus=task_cpus, num_gpus=task_gpus)
    pending = {remote.remote({**p, "threads": threads}): p for p in payloads}
    try:
        while pending:
            refs = list(pending)
            ready, rest = ray.wait(refs, num_returns=1)
            if rest:  # collect everything else already finished in the same pass
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                payload = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # worker died, node lost, task cancelled
                    yield failure(payload, exc)
    finally:
        for ref in pending:
            ray.cancel(ref, force=False)
