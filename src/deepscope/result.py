"""The Result every probe returns: a tidy table, a summary dict and the settings used."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Result"]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return None if math.isnan(f) else (str(f) if math.isinf(f) else f)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    if x is pd.NA:
        return None
    return x


@dataclass
class Result:
    """Outcome of a probe.

    Attributes:
        kind: which probe produced it (``"spectra"``, ``"train"``, ...).
        table: one row per layer / point / model, with stable column names.
        summary: scalar summaries (means, counts, verdicts).
        settings: the options the probe ran with, for reproducibility.
    """

    kind: str
    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rows = self.table.to_dict(orient="records")
        return _jsonable({"kind": self.kind, "summary": self.summary,
                          "settings": self.settings, "table": rows})

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Result":
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        data = json.loads(p.read_text() if p is not None else str(text_or_path))
        return cls(kind=data["kind"], table=pd.DataFrame(data["table"]),
                   summary=data.get("summary", {}), settings=data.get("settings", {}))

    def to_csv(self, path: str | Path | None = None) -> str:
        text = self.table.to_csv(index=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def __repr__(self) -> str:
        with pd.option_context("display.width", 160, "display.max_columns", 40):
            return (f"<Result {self.kind}: {len(self.table)} rows>\n{self.table}\n"
                    f"summary: {self.summary}")
