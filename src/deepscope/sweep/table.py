"""``zoo_table``: one row per run of a zoo, hyper-parameters, metrics and probe summaries flat.

Columns, in this order:

- ``id``, ``status``;
- every field of the completed config as ``arch.<key>``, ``data.<key>``, ``train.<key>``
  (list values such as ``arch.widths`` become tuples, so they can be grouped on);
- ``metrics.<key>``: the final training metrics (``metrics.test_acc``, ...);
- ``<probe>.<key>``: the summary of each stored measurement, nested dicts flattened with dots
  (``spectra.alpha``, ``spectra.phase_counts.bulk+spikes``); when a run has results of one
  probe under several settings, the most recent one is shown;
- ``duration_s``, ``started``, ``finished``, ``attempts``, ``host``, ``error``,
  ``checkpoint`` (absolute path).

:func:`export_zoo` writes the table as CSV, or Parquet when pyarrow is installed; tuple cells
are written as JSON lists (``[16, 16]``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from deepscope._io import atomic_write
from deepscope.errors import ConfigError
from deepscope.sweep.catalog import Catalog
from deepscope.sweep.spec import SECTIONS

__all__ = ["zoo_table", "export_zoo", "file_cells", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("csv", "parquet")
_TAIL = ("duration_s", "started", "finished", "attempts", "host", "error", "checkpoint")


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = _cell(value)


def zoo_table(zoo_dir: str | Path, *, status: str | None = None, varying_only: bool = False,
              measurements: bool = True) -> pd.DataFrame:
    """The runs of a zoo as a DataFrame (columns in the module docstring).

    Args:
        zoo_dir: a zoo made by :func:`~deepscope.sweep.run_sweep`.
        status: keep only runs with this status (``"done"``, ``"failed"``, ...).
        varying_only: drop ``arch.*``/``data.*``/``train.*`` columns with one value in every
            row (what the sweep did not vary).
        measurements: add the ``<probe>.<key>`` summary columns.
    """
    zoo = Path(zoo_dir)
    with Catalog(zoo, create=False) as cat:
        runs = cat.runs(status)
        found = cat.measurements() if measurements else []
    latest: dict[str, dict[str, Any]] = {}
    for m in found:  # ordered by creation time: later results overwrite earlier ones
        if m["error"] is None and isinstance(m["summary"], Mapping):
            flat: dict[str, Any] = {}
            _flatten(m["probe"], m["summary"], flat)
            latest.setdefault(m["run_id"], {}).update(flat)
    rows, hyper, metric_cols, probe_cols = [], {}, {}, {}
    for r in runs:
        row: dict[str, Any] = {"id": r["id"], "status": r["status"]}
        config = r["config"] or {}
        for section in SECTIONS:
            for key, value in (config.get(section) or {}).items():
                hyper[f"{section}.{key}"] = None
                row[f"{section}.{key}"] = _cell(value)
        for key, value in (r["metrics"] or {}).items():
            metric_cols[f"metrics.{key}"] = None
            row[f"metrics.{key}"] = _cell(value)
        for key, value in latest.get(r["id"], {}).items():
            probe_cols[key] = None
            row[key] = value
        for key in _TAIL:
            row[key] = r[key]
        row["checkpoint"] = (str((zoo / r["checkpoint"]).resolve()) if r["checkpoint"]
                             else None)
        rows.append(row)
    columns = ["id", "status", *hyper, *metric_cols, *sorted(probe_cols), *_TAIL]
    table = pd.DataFrame(rows, columns=columns)
    if varying_only and len(table):
        keep = [c for c in hyper if table[c].map(repr).nunique(dropna=False) > 1]
        table = table[[c for c in columns if c not in hyper or c in keep]]
    return table


def file_cells(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with tuple cells as JSON lists (``(16, 16)`` -> ``"[16, 16]"``)."""
    out = table.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, tuple)).any():
            out[col] = out[col].map(lambda v: json.dumps(list(v)) if isinstance(v, tuple)
                                    else v)
    return out


def export_zoo(zoo_dir: str | Path, path: str | Path, *, format: str | None = None,
               **table_options: Any) -> Path:
    """Write :func:`zoo_table` to ``path`` as CSV or Parquet (by ``format`` or the suffix).

    Parquet needs pyarrow; without it a ``ConfigError`` says so. ``table_options`` go to
    :func:`zoo_table`.
    """
    path = Path(path)
    fmt = format
    if fmt is None:
        suffix = path.suffix.lower().lstrip(".")
        fmt = {"csv": "csv", "parquet": "parquet", "pq": "parquet"}.get(suffix)
        if fmt is None:
            raise ConfigError(f"export path {str(path)!r}: cannot tell the format from suffix "
                              f"{path.suffix!r}; expected .csv or .parquet (or pass format=)")
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("format 'parquet' needs pyarrow (pip install pyarrow); "
                              "export to .csv instead") from None
    table = file_cells(zoo_table(zoo_dir, **table_options))
    with atomic_write(path) as tmp:
        if fmt == "csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False, engine="pyarrow")
    return path
