"""The result of :func:`deepscope.realization.probe.realization`.

Table layout (``NEURON_COLUMNS``, a public contract): one row per matched neuron pair of the
canonical (balanced, zero-cleaned, padded) nets, in net a's canonical order.

=============  ===========================================================================
neuron_a       index of the neuron in net a as given (−1: a zero neuron padding a)
neuron_b       index in net b of the neuron matched to it (−1: padding of b)
magnitude_a    ρ = ‖a_k‖ = ‖(w_k, b_k)‖ of the balanced neuron of a (0 for zero neurons)
magnitude_b    the same for the matched neuron of b
cosine         cosine of the angle between their (w, b) directions (NaN with a zero neuron)
distance       ‖θ^a − θ^b‖ (chosen ord) of the matched balanced parameter rows (w, b, a)
=============  ===========================================================================

:attr:`RealizationResult.pathologies`: columns ``net`` (``"a"``/``"b"``) plus
:data:`~deepscope.realization.pathologies.PATHOLOGY_COLUMNS`.
:attr:`RealizationResult.samples`: the evaluation points and the pointwise value / gradient
differences (for the figures).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepscope.result import Result, _jsonable

__all__ = ["NEURON_COLUMNS", "RealizationResult"]

#: Table columns, in order (names never change).
NEURON_COLUMNS = ("neuron_a", "neuron_b", "magnitude_a", "magnitude_b", "cosine", "distance")


@dataclass(repr=False)
class RealizationResult(Result):
    """:class:`~deepscope.result.Result` plus the pathologies and the sampled differences."""

    pathologies: pd.DataFrame = field(default_factory=pd.DataFrame)
    samples: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        d = super().to_dict()
        d["pathologies"] = _jsonable(self.pathologies.to_dict(orient="records"))
        if include_samples:
            d["samples"] = _jsonable({k: np.asarray(v) for k, v in self.samples.items()})
        return d
