"""Pieces every CLI sub-command shares: argparse value types and result printing.

Sub-command modules (``*/cli_commands.py``, ``landscape/cli_*.py``) parse arguments, call the
API and print through :func:`emit`; nothing else.
"""
from __future__ import annotations

import argparse
import json
import math

__all__ = ["positive_int", "nonneg_float", "positive_float", "emit", "print_summary",
           "print_table", "format_value"]


def _number(text: str, kind, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a number > 0")


def format_value(val) -> str:
    """Summary values for the terminal: floats to 6 significant digits, lists as JSON."""
    if isinstance(val, float):
        return f"{val:.6g}"
    if isinstance(val, (list, tuple)):
        return json.dumps([float(f"{v:.6g}") if isinstance(v, float) else v for v in val],
                          default=str)
    if isinstance(val, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in val.items())
    return str(val)


def print_table(table, *, max_rows: int = 1000, index: bool = False) -> None:
    """A DataFrame with floats to 6 significant digits and NaN as ``-``; a longer one shows
    its first and last ``max_rows // 2`` rows. ``index=True`` keeps the row labels (e.g. a
    matrix indexed by layer)."""
    import pandas as pd
    with pd.option_context("display.width", 250, "display.max_columns", 60,
                           "display.max_rows", max_rows, "display.float_format",
                           "{:.6g}".format):
        print(table.to_string(index=index, na_rep="-", max_rows=max_rows))


def print_summary(summary: dict, *, keys=None, skip=()) -> None:
    """``key: value`` lines (see :func:`format_value`), in ``keys`` order when given (keys
    missing from the summary are left out), leaving out ``skip`` and None values."""
    for key in (summary if keys is None else keys):
        val = summary.get(key)
        if key in skip or val is None:
            continue
        print(f"{key}: {format_value(val)}")


def emit(res, fmt: str, *, table=None, keys=None, skip=(), max_rows: int = 1000,
         index: bool = False) -> int:
    """Print a Result as JSON, CSV, or its table (``table`` overrides) and summary (``keys``,
    ``skip``: see :func:`print_summary`; ``max_rows``, ``index``: see :func:`print_table`);
    return 0."""
    if fmt == "json":
        print(res.to_json())
    elif fmt == "csv":
        print(res.to_csv(), end="")
    else:
        print_table(res.table if table is None else table, max_rows=max_rows, index=index)
        print()
        print_summary(res.summary, keys=keys, skip=skip)
    return 0
