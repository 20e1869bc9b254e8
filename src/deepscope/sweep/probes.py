"""Probes over a zoo: a registry of ``fn(checkpoint_path, **options) -> Result`` and
:func:`measure_zoo`, which runs them over every finished run with any engine.

Results are stored in the catalog's ``measurements`` table, keyed by (run id, probe name,
settings hash), where the settings hash is the first 16 hex digits of the sha256 of the
canonical JSON of the options the probe was called with. A pair already stored without error
under the same settings is skipped; a failed measurement is tried again on the next call.

Built-in probes:

- ``"spectra"``: :func:`deepscope.weights.probe.spectra` (heavy-tailed self-regularization,
  one row per layer; ``progress`` is forced off inside workers).
- ``"margins"``: :func:`deepscope.generalization.probes.margins_probe` (normalized margin
  distributions at four layers and their 20-feature signature, Jiang et al. 2019).
- ``"measures"``: :func:`deepscope.generalization.probes.measures_probe` (the generalization
  measures of :func:`deepscope.generalization.measures.measures`, Jiang et al. 2020).
- ``"ntk"``: :func:`deepscope.dynamics.ntk.ntk_probe` (empirical NTK Gram on probe points:
  lambda_min, lambda_max, condition number).
- ``"gdv"``: :func:`deepscope.representations.gdv.gdv_probe` (generalized discrimination
  value per layer, Schilling et al. 2018).

For the ``"process"`` engine a probe function must be picklable by reference (defined at the
top level of an importable module); Ray pickles closures too. The registry lives in the
driver: the function itself travels with each task, so workers need not register anything.
"""
from __future__ import annotations

import contextlib
import pickle
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, unknown_name
from deepscope.sweep.catalog import Catalog
from deepscope.sweep.engines import check_engine, execute
from deepscope.sweep.runner import (SweepSummary, checkpoint_ok, engine_session, zoo_lock,
                                   zoo_path)
from deepscope.sweep.spec import canonical_json, config_id

__all__ = ["register_probe", "unregister_probe", "registered_probes", "get_probe",
           "measure_zoo", "settings_hash"]

ProbeFn = Callable[..., Any]
_PROBES: dict[str, ProbeFn] = {}


def register_probe(name: str, fn: ProbeFn, *, replace: bool = False) -> None:
    """Make ``fn(checkpoint_path, **options) -> Result`` available to :func:`measure_zoo`.

    Re-registering a name raises ``ConfigError`` unless ``replace=True``.
    """
    if not isinstance(name, str) or not name or any(c in name for c in " .\t\n"):
        raise ConfigError(f"probe name must be a non-empty string without spaces or dots, "
                          f"got {name!r}")
    if not callable(fn):
        raise ConfigError(f"probe {name!r}: expected a callable, got {type(fn).__name__}")
    if name in _PROBES and not replace and _PROBES[name] is not fn:
        raise ConfigError(f"probe {name!r} is already registered; pass replace=True to "
                          f"replace it")
    _PROBES[name] = fn


def unregister_probe(name: str) -> None:
    """Remove a probe from the registry (unknown names raise ``ConfigError``)."""
    if name not in _PROBES:
        raise unknown_name("probe", name, _PROBES)
    del _PROBES[name]


def registered_probes() -> list[str]:
    """Names of the registered probes, sorted."""
    return sorted(_PROBES)


def get_probe(name: str) -> ProbeFn:
    """The function registered under ``name``."""
    if name not in _PROBES:
        raise unknown_name("probe", name, _PROBES)
    return _PROBES[name]


def settings_hash(options: Mapping[str, Any]) -> str:
    """Content hash (16 hex digits) of a probe's options; key order does not matter."""
    return config_id(dict(options))


def spectra_probe(checkpoint: str | Path, **options: Any):
    """Built-in ``"spectra"`` probe: :func:`deepscope.weights.probe.spectra` of a checkpoint."""
    from deepscope.weights.probe import spectra  # imported lazily: an optional module
    options["progress"] = False
    return spectra(checkpoint, **options)


register_probe("spectra", spectra_probe)

from deepscope.generalization.probes import margins_probe, measures_probe  # noqa: E402

register_probe("margins", margins_probe)
register_probe("measures", measures_probe)

from deepscope.dynamics.ntk import ntk_probe  # noqa: E402

register_probe("ntk", ntk_probe)

from deepscope.representations.gdv import gdv_probe  # noqa: E402

register_probe("gdv", gdv_probe)


def _resolve(probes: Iterable[str] | str | None, options: Mapping[str, Any] | None
             ) -> list[tuple[str, ProbeFn, dict[str, Any], str]]:
    if probes is None:
        names = registered_probes()
    elif isinstance(probes, str):
        names = [probes]
    else:
        names = list(probes)
    if not names:
        raise ConfigError("probes: expected at least one probe name, got none")
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ConfigError(f"options must map probe names to option dicts, got "
                          f"{type(options).__name__}")
    for key in options:
        if key not in names:
            raise ConfigError(f"options[{key!r}]: not one of the probes being run "
                              f"({', '.join(names)})")
    out = []
    for name in dict.fromkeys(names):
        fn = get_probe(name)
        opts = options.get(name, {})
        if not isinstance(opts, Mapping):
            raise ConfigError(f"options[{name!r}]: expected a dict of keyword arguments, "
                              f"got {opts!r}")
        opts = dict(opts)
        try:
            canonical_json(opts)
        except ConfigError as exc:
            raise ConfigError(f"options[{name!r}]: {exc}") from None
        out.append((name, fn, opts, settings_hash(opts)))
    return out


def _check_picklable(name: str, fn: ProbeFn) -> None:
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise ConfigError(f"probe {name!r} cannot be sent to worker processes ({exc}); "
                          f"define it at the top level of a module, or use engine 'local' "
                          f"or 'ray'") from None


def measure_zoo(zoo_dir: str | Path, probes: Iterable[str] | str | None = None, *,
                options: Mapping[str, Mapping[str, Any]] | None = None,
                engine: str = "local", workers: int | None = None,
                address: str | None = None, task_cpus: float = 1, task_gpus: float = 0,
                threads: int | None = None, runs: Iterable[str] | None = None,
                progress: bool = True) -> SweepSummary:
    """Run probes over every finished run of a zoo and store the results in its catalog.

    Args:
        zoo_dir: a zoo made by :func:`~deepscope.sweep.run_sweep`.
        probes: probe names (default: every registered probe).
        options: ``{probe name: {keyword: value}}`` passed to the probe; part of the key
            under which results are stored.
        engine, workers, address, task_cpus, task_gpus, threads: as for ``run_sweep``.
        runs: restrict to these run ids (default: every run with status 'done').
        progress: show a progress bar over (run, probe) pairs.

    Returns:
        :class:`~deepscope.sweep.SweepSummary` counting (run, probe) pairs: ``done`` measured
        now, ``failed`` (errors by ``"<run id>/<probe>"``), ``skipped`` (already stored).
    """
    t0 = time.perf_counter()
    n_workers = check_engine(engine, workers, address, threads=threads,
                             task_cpus=task_cpus, task_gpus=task_gpus)
    zoo = zoo_path(zoo_dir)
    plan = _resolve(probes, options)
    if engine == "process":
        for name, fn, _, _ in plan:
            _check_picklable(name, fn)
    summary = SweepSummary(0, 0, 0, 0.0, zoo)
    # the catalog first: a directory without one is refused before the lock file is made
    with Catalog(zoo, create=False) as cat, zoo_lock(zoo):
        done_runs = [r for r in cat.runs("done")
                     if checkpoint_ok(zoo / Catalog.checkpoint_name(r["id"]))]
        if runs is not None:
            wanted = {runs} if isinstance(runs, str) else set(runs)
            unknown = wanted - {r["id"] for r in cat.runs()}
            if unknown:
                raise ConfigError(f"runs: unknown run id(s) {', '.join(sorted(unknown))} in "
                                  f"zoo {str(zoo)!r}")
            done_runs = [r for r in done_runs if r["id"] in wanted]
        payloads, settings = [], {}
        for name, fn, opts, h in plan:
            settings[(name, h)] = opts
            stored = cat.measured(name, h)
            for r in done_runs:
                if r["id"] in stored:
                    summary.skipped += 1
                    continue
                payloads.append({"id": r["id"], "probe": name, "fn": fn, "options": opts,
                                 "settings_hash": h,
                                 "checkpoint": str((zoo / Catalog.checkpoint_name(r["id"]))
                                                   .resolve())})
        from deepscope.sweep.worker import probe_task
        bar = progress_bar(total=len(payloads), enabled=progress, desc=f"measure [{engine}]",
                           unit="probe")
        session = (engine_session(engine, address, n_workers) if payloads
                   else contextlib.nullcontext())
        with session, bar:
            for outcome in execute(probe_task, payloads, engine=engine, workers=n_workers,
                                   task_cpus=task_cpus, task_gpus=task_gpus,
                                   threads=threads):
                cat.record_measurement(outcome, settings[(outcome["probe"],
                                                          outcome["settings_hash"])])
                if outcome.get("status") == "done":
                    summary.done += 1
                else:
                    summary.failed += 1
                    summary.errors[f"{outcome['id']}/{outcome['probe']}"] = (
                        outcome.get("error") or "unknown error")
                summary.task_seconds += outcome.get("duration_s") or 0.0
                bar.update(1)
                bar.set_postfix(done=summary.done, failed=summary.failed, refresh=False)
    summary.duration_s = time.perf_counter() - t0
    return summary
