"""A training callback that records per-layer alpha and phase every k epochs.

Lets a user watch the 5+1 phases move during training (Martin & Mahoney, JMLR 2021, Sec. 6):
every ``every`` epochs (and at epoch 0 when ``at_start``) it runs
:func:`deepscope.weights.spectra` on the model being trained (read-only), keeps the per-layer
rows in :attr:`SpectraMonitor.table` (one row per epoch and layer) and logs the mean alpha
and the phase counts into the training history (columns ``spectra/alpha``,
``spectra/<phase>``).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from deepscope.errors import ConfigError
from deepscope.train.callbacks import Callback

__all__ = ["SpectraMonitor"]

_KEEP = ("layer", "type", "alpha", "alpha_ci_low", "alpha_ci_high", "fit_status", "phase",
         "num_spikes", "mp_softrank", "lambda_max", "log_norm", "stable_rank")


class SpectraMonitor(Callback):
    """Record the spectra of the model's layers every ``every`` epochs.

    Args:
        every: period in epochs (>= 1).
        at_start: also analyze the initialization (epoch 0).
        **spectra_options: passed to :func:`deepscope.weights.spectra` (``layers=``,
            ``bootstrap=``, ``min_tail=``, ...); the progress bar is off.
    """

    def __init__(self, every: int = 1, *, at_start: bool = True, **spectra_options: Any):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be an integer >= 1, got {every!r}")
        self.every = every
        self.at_start = at_start
        self.options = dict(spectra_options, progress=False)
        self._rows: list[pd.DataFrame] = []

    def _record(self, state, epoch: int) -> None:
        from deepscope.weights.probe import spectra
        res = spectra(state.model, **self.options)
        t = res.table[[c for c in _KEEP if c in res.table]].copy()
        t.insert(0, "epoch", epoch)
        self._rows.append(t)
        alpha = res.summary.get("alpha")
        state.log("spectra/alpha", alpha)
        for phase, n in res.summary["phase_counts"].items():
            state.log(f"spectra/{phase}", n)

    def on_train_begin(self, state) -> None:
        self._rows = []
        if self.at_start:
            self._record(state, 0)

    def on_epoch_end(self, state) -> None:
        if state.epoch % self.every == 0:
            self._record(state, state.epoch)

    @property
    def table(self) -> pd.DataFrame:
        """One row per (epoch, layer): alpha, CI, fit status, phase, spikes, soft rank."""
        if not self._rows:
            return pd.DataFrame(columns=["epoch", *_KEEP])
        return pd.concat(self._rows, ignore_index=True)
