"""Results of the dynamics probes: the empirical NTK and the over-parameterization experiment.

NTK table layout (``NTK_COLUMNS``, a public contract), one row per eigenvalue of the kernel:

==========  ========================================================================
index       rank of the eigenvalue, 0 = largest
eigenvalue  eigenvalue of the (symmetrized) empirical NTK
fraction    eigenvalue / trace
==========  ========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepscope.result import Result

__all__ = ["NTK_COLUMNS", "NTKResult", "OverparamResult"]

#: NTK table columns, in order (names never change).
NTK_COLUMNS = ("index", "eigenvalue", "fraction")


@dataclass(repr=False)
class NTKResult(Result):
    """:class:`~deepscope.result.Result` plus the kernel itself and its eigenvalues."""

    gram: torch.Tensor | None = None
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def to_dict(self, *, include_gram: bool = False) -> dict[str, Any]:
        d = super().to_dict()
        if include_gram and self.gram is not None:
            d["gram"] = self.gram.double().tolist()
        return d


@dataclass(repr=False)
class OverparamResult(Result):
    """The over-parameterization experiment: ``table`` one row per (width, seed);
    ``curves`` the Gram/weight measurements at the evaluated steps; ``losses`` the training
    loss at every step (columns ``width, seed, step, loss``)."""

    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    losses: pd.DataFrame = field(default_factory=pd.DataFrame)
