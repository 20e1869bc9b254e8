"""The ``deepscope sweep | measure | zoo`` sub-commands: argument parsing and printing only.

``deepscope.cli`` adds them with ``_add_sweep(sub)``, ``_add_measure(sub)``, ``_add_zoo(sub)``
(each sets ``func`` to the matching ``_cmd_*``). Errors are DeepscopeErrors raised by the API;
the CLI's main turns them into exit code 2 with one line.

    deepscope sweep study.toml --zoo zoo/ --engine process --workers 4
    deepscope sweep study.toml --zoo zoo/ --dry-run
    deepscope measure zoo/ --probe spectra --set spectra.randomize=true --engine ray
    deepscope zoo zoo/ --format csv          # or --export runs.parquet
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepscope._cli_common import nonneg_float as _nonneg_float
from deepscope._cli_common import positive_int as _positive_int
from deepscope.result import _jsonable

__all__ = ["_add_sweep", "_cmd_sweep", "_add_measure", "_cmd_measure", "_add_zoo", "_cmd_zoo",
           "SWEEP_COMMANDS"]

_SHOWN_METRICS = ("metrics.train_loss", "metrics.train_acc", "metrics.test_loss",
                  "metrics.test_acc")


def _setting(text: str) -> tuple[str, str, object]:
    """``PROBE.KEY=VALUE`` -> (probe, key, value); VALUE is JSON when it parses, else text."""
    name, sep, raw = text.partition("=")
    probe, dot, key = name.partition(".")
    if not sep or not dot or not probe or not key:
        raise argparse.ArgumentTypeError(f"expected PROBE.KEY=VALUE (e.g. "
                                         f"spectra.randomize=true), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return probe, key, value


def _add_engine(p: argparse.ArgumentParser) -> None:
    from deepscope.sweep.engines import ENGINES
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local (sequential), process (process pool) or ray (default local)")
    g.add_argument("--workers", type=_positive_int, default=None,
                   help="parallel workers (default: the CPUs available)")
    g.add_argument("--address", default=None,
                   help="Ray cluster to connect to ('auto', 'ray://host:10001'); default: "
                        "start a local one")
    g.add_argument("--task-cpus", type=_nonneg_float, default=1.0,
                   help="Ray num_cpus per task (default 1)")
    g.add_argument("--task-gpus", type=_nonneg_float, default=0.0,
                   help="Ray num_gpus per task (default 0)")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads per task (default: local as is, process 1, "
                        "ray --task-cpus)")


def _engine_kwargs(args) -> dict:
    return {"engine": args.engine, "workers": args.workers, "address": args.address,
            "task_cpus": args.task_cpus, "task_gpus": args.task_gpus,
            "threads": args.threads, "progress": not args.quiet}


def _print_summary(summary, fmt: str, what: str) -> None:
    if fmt == "json":
        print(json.dumps({"zoo": str(summary.zoo_dir), "done": summary.done,
                          "failed": summary.failed, "skipped": summary.skipped,
                          "duration_s": round(summary.duration_s, 3),
                          "errors": summary.errors}, indent=2))
        return
    print(f"{what}: {summary} (zoo {summary.zoo_dir})")
    for key, error in summary.errors.items():
        print(f"  failed {key}: {error}")


# --------------------------------------------------------------------------- sweep

def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train every task of a sweep spec into a zoo (resumable)")
    p.add_argument("spec", type=Path, help="sweep spec (.toml or .json)")
    p.add_argument("-o", "--zoo", type=Path, required=True,
                   help="zoo directory: catalog.sqlite and runs/<id>.safetensors")
    _add_engine(p)
    p.add_argument("--skip-failed", action="store_true",
                   help="do not retry tasks recorded as failed")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the spec, list its tasks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from deepscope.sweep import expand_spec, run_sweep
    if args.dry_run:
        tasks = expand_spec(args.spec)
        if args.format == "json":
            print(json.dumps([{"id": t.id, "assignments": t.assignments, "config": t.config}
                              for t in tasks], indent=2))
        else:
            for t in tasks:
                print(f"{t.id}  {t.label}")
            print(f"{len(tasks)} tasks")
        return 0
    summary = run_sweep(args.spec, args.zoo, retry_failed=not args.skip_failed,
                        **_engine_kwargs(args))
    _print_summary(summary, args.format, "sweep")
    return 0


# --------------------------------------------------------------------------- measure

def _add_measure(sub) -> None:
    from deepscope.sweep import registered_probes
    p = sub.add_parser("measure", help="run probes over every finished run of a zoo")
    p.add_argument("zoo", type=Path, help="zoo directory made by `deepscope sweep`")
    p.add_argument("--probe", action="append", dest="probes", metavar="NAME",
                   help=f"probe to run (repeatable; default all: "
                        f"{', '.join(registered_probes())})")
    p.add_argument("--set", action="append", dest="settings", type=_setting, default=[],
                   metavar="PROBE.KEY=VALUE",
                   help="probe option (VALUE parsed as JSON when possible; repeatable)")
    p.add_argument("--run", action="append", dest="runs", metavar="ID",
                   help="only this run id (repeatable)")
    _add_engine(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_measure)


def _cmd_measure(args) -> int:
    from deepscope.sweep import measure_zoo
    options: dict[str, dict] = {}
    for probe, key, value in args.settings:
        options.setdefault(probe, {})[key] = value
    probes = args.probes
    if probes is None and options:
        probes = list(options)
    summary = measure_zoo(args.zoo, probes, options=options or None, runs=args.runs,
                          **_engine_kwargs(args))
    _print_summary(summary, args.format, "measure")
    return 0


# --------------------------------------------------------------------------- zoo

def _add_zoo(sub) -> None:
    p = sub.add_parser("zoo", help="list the runs of a zoo (hyper-parameters, metrics, probes)")
    p.add_argument("zoo", type=Path, help="zoo directory made by `deepscope sweep`")
    p.add_argument("--status", choices=("done", "failed", "running", "pending"),
                   help="only runs with this status")
    p.add_argument("--all-columns", action="store_true",
                   help="every config and metric column (default for table: what varies)")
    p.add_argument("--no-measurements", action="store_true", help="leave out probe summaries")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--export", type=Path, metavar="FILE",
                   help="write the full table to FILE (.csv, or .parquet with pyarrow)")
    p.set_defaults(func=_cmd_zoo)


def _cmd_zoo(args) -> int:
    import pandas as pd
    from deepscope.sweep import export_zoo, zoo_table
    from deepscope.sweep.table import file_cells
    measurements = not args.no_measurements
    if args.export is not None:
        path = export_zoo(args.zoo, args.export, status=args.status, measurements=measurements)
        print(f"wrote {path}")
        return 0
    compact = args.format == "table" and not args.all_columns
    table = zoo_table(args.zoo, status=args.status, varying_only=compact,
                      measurements=measurements)
    if compact:
        keep = [c for c in table.columns
                if not c.startswith("metrics.") or c in _SHOWN_METRICS]
        keep = [c for c in keep if c not in ("started", "finished", "host", "checkpoint")]
        table = table[keep]
    if args.format == "json":
        print(json.dumps(_jsonable(table.to_dict(orient="records")), indent=2, default=str))
    elif args.format == "csv":
        print(file_cells(table).to_csv(index=False), end="")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 60,
                               "display.max_colwidth", 60):
            print(table.to_string(index=False) if len(table) else "(no runs)")
    return 0


SWEEP_COMMANDS = [_add_sweep, _add_measure, _add_zoo]
COMMANDS = SWEEP_COMMANDS
"""The ``_add_*`` functions, for ``deepscope.cli._COMMANDS``."""
