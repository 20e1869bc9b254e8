"""The spectra result: stable per-layer columns and the weightwatcher-compatible summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepscope.result import Result

__all__ = ["COLUMNS", "SUMMARY_MEANS", "PHASES", "SpectraResult", "summarize"]

#: Per-layer columns, in order (a public contract: names never change).
COLUMNS = ("layer", "type", "N", "M", "Q", "num_matrices", "num_evals", "lambda_max", "alpha",
           "alpha_ci_low", "alpha_ci_high", "xmin", "ks_distance", "num_tail", "fit_status",
           "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm", "stable_rank",
           "entropy", "mp_sigma", "mp_bulk_max", "num_spikes", "mp_softrank",
           "rank_collapse_fraction", "phase", "note")

#: Means reported in the summary, over successfully fitted layers (weightwatcher's names).
SUMMARY_MEANS = ("alpha", "alpha_weighted", "log_norm", "log_alpha_norm",
                 "log_spectral_norm", "stable_rank")

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
          "rank-collapse", "undetermined")


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """Means over layers whose fit succeeded; failed fits, skips and phases counted apart.

    weightwatcher averages over every layer, failed fits included; here a failed fit never
    contributes a number. ``num_failed`` counts analyzed layers whose fit did not succeed.
    """
    ok = table[table["fit_status"] == "ok"]
    analyzed = table[table["fit_status"] != "skipped"]  # not_finite rows count as failed
    out: dict[str, Any] = {}
    for col in SUMMARY_MEANS:
        vals = pd.to_numeric(ok[col], errors="coerce").to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        out[col] = float(vals.mean()) if vals.size else float("nan")
    out["num_layers"] = int(len(table))
    out["num_analyzed"] = int(len(analyzed))
    out["num_fitted"] = int(len(ok))
    out["num_failed"] = int(len(analyzed) - len(ok))
    out["num_skipped"] = int(len(table) - len(analyzed))
    counts = analyzed["phase"].value_counts()
    out["phase_counts"] = {p: int(counts.get(p, 0)) for p in PHASES}
    if "num_traps" in table:
        out["num_traps"] = int(pd.to_numeric(table["num_traps"], errors="coerce").fillna(0).sum())
    return out


@dataclass(repr=False)
class SpectraResult(Result):
    """:class:`~deepscope.result.Result` plus the eigenvalues of each analyzed layer."""

    evals: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self, *, include_evals: bool = False) -> dict[str, Any]:
        d = super().to_dict()
        if include_evals:
            d["evals"] = {k: v.tolist() for k, v in self.evals.items()}
        return d
