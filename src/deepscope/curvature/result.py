"""The Hessian result: a tidy long table (one row per block x quantity x index) plus densities.

Table layout (``COLUMNS``, a public contract):

==========  ==========================================================================
block       ``"all"`` for the whole model; with ``per_layer`` a module name (its parameters)
            or a parameter name
num_params  parameters in the block (the operator's dimension)
quantity    ``"eigenvalue"`` (Lanczos Ritz value) or ``"trace"``
index       eigenvalue rank, 0 = largest (``which="largest"``); 0 for the trace
value       the eigenvalue or trace estimate
stderr      the trace estimate's standard error (NaN for eigenvalues)
residual    Ritz residual ‖H y − θ y‖ of the eigenvalue (NaN for the trace)
num_hvps    operator products that this quantity of this block used
method      ``"lanczos"`` / ``"scipy"``, ``"hutch++"`` / ``"hutchinson"``
==========  ==========================================================================

With ``hessian(..., vectors=True)``, :attr:`HessianResult.eigenvectors` holds the top-k
eigenvectors of block ``"all"`` (``{parameter name: tensor}``, unit norm over the trainable
parameters); they are not part of ``to_dict`` / ``to_json`` (the CLI writes them with
``--vectors FILE.safetensors``).

The spectral density is not a table: :attr:`HessianResult.densities` maps a block to its
:class:`~deepscope.linalg.slq.SpectralDensity` (grid, density, quadrature nodes/weights);
``density_grid`` / ``density`` are those of block ``"all"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from deepscope.linalg.slq import SpectralDensity
from deepscope.result import Result

__all__ = ["COLUMNS", "HessianResult"]

#: Table columns, in order (names never change).
COLUMNS = ("block", "num_params", "quantity", "index", "value", "stderr", "residual",
           "num_hvps", "method")


@dataclass(repr=False)
class HessianResult(Result):
    """:class:`~deepscope.result.Result` plus SLQ spectral densities per block and, when
    asked for, the top eigenvectors."""

    densities: dict[str, SpectralDensity] = field(default_factory=dict)
    eigenvectors: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def density_grid(self) -> np.ndarray | None:
        d = self.densities.get("all")
        return None if d is None else d.grid

    @property
    def density(self) -> np.ndarray | None:
        d = self.densities.get("all")
        return None if d is None else d.density

    def eigenvalues(self, block: str = "all") -> np.ndarray:
        """The block's eigenvalues in table order (largest first)."""
        t = self.table
        rows = t[(t["block"] == block) & (t["quantity"] == "eigenvalue")]
        return rows.sort_values("index")["value"].to_numpy(dtype=float)

    def to_dict(self, *, include_density: bool = False) -> dict[str, Any]:
        d = super().to_dict()
        if include_density:
            d["densities"] = {b: {"grid": s.grid.tolist(), "density": s.density.tolist(),
                                  "nodes": s.nodes.tolist(), "weights": s.weights.tolist(),
                                  "sigma": s.sigma}
                              for b, s in self.densities.items()}
        return d
