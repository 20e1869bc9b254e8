"""Results of the path probes: linear interpolation curves and permutation alignment.

:class:`InterpolationResult` table (one row per t, in order; a public contract)::

    t                         the interpolation coefficient, θ(t) = (1 - t) θ_a + t θ_b
    <split>_loss              mean loss at θ(t) on the split (train, test, or the dict's names)
    <split>_accuracy          accuracy (NaN for regression targets)
    <split>_error             1 - accuracy (classification only)
    <split>_loss_linear       (1 - t) L(0) + t L(1), the straight reference line
    <split>_error_linear      the same for the error (classification only)

Summary per split: ``barrier_<split>_loss`` = max_t [L(t) - ((1 - t) L(0) + t L(1))]
(Frankle et al. 2020; Entezari et al. 2022), ``barrier_<split>_loss_t`` (its argmax),
``barrier_<split>_error`` and ``barrier_<split>_error_t`` (classification), and the end
values ``<split>_loss_a``, ``<split>_loss_b``, ``<split>_error_a``, ``<split>_error_b``.

:class:`AlignResult` table (one row per round of coordinate descent)::

    round            1, 2, ...
    objective        Σ over all parameters ⟨W_a, π(W_b)⟩ after the round
    groups_changed   permutation groups whose assignment changed in the round
    units_moved      hidden units (over all groups) not at their own index after the round
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from deepscope.result import Result

__all__ = ["InterpolationResult", "AlignResult", "ALIGN_COLUMNS"]

ALIGN_COLUMNS = ("round", "objective", "groups_changed", "units_moved")


@dataclass(repr=False)
class InterpolationResult(Result):
    """Loss/accuracy along the straight segment between two models (see module docstring)."""

    @property
    def splits(self) -> list[str]:
        """The evaluated splits, in table order."""
        return list(self.settings.get("splits", []))

    @property
    def t(self) -> np.ndarray:
        return self.table["t"].to_numpy(dtype=float)

    def curve(self, split: str = "train", metric: str = "loss") -> np.ndarray:
        """The column ``<split>_<metric>`` (metric: loss, accuracy, error, loss_linear, ...)."""
        return self.table[f"{split}_{metric}"].to_numpy(dtype=float)

    def barrier(self, split: str = "train", metric: str = "loss") -> float:
        """``barrier_<split>_<metric>`` of the summary (metric: ``loss`` or ``error``)."""
        return float(self.summary[f"barrier_{split}_{metric}"])


@dataclass(repr=False)
class AlignResult(Result):
    """Weight matching outcome: the aligned copy of ``b`` and the permutation per group.

    Attributes:
        model: a new module, ``b`` with its hidden units permuted (``b`` is untouched).
        permutations: ``{group: LongTensor p}``; unit ``i`` of the aligned model is unit
            ``p[i]`` of ``b``.
        spec: the permutation spec used (:class:`deepscope.landscape.align.PermutationSpec`).
    """

    model: nn.Module | None = None
    permutations: dict[str, Tensor] = field(default_factory=dict)
    spec: Any = None

    def permute(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Apply the permutations to another state of ``b``'s architecture (e.g. its initial
        weights); entries the spec does not touch are returned as they are."""
        from deepscope.landscape.align import apply_permutations
        return apply_permutations(self.spec, self.permutations, state)
