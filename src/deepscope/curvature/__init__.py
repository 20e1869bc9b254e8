"""Curvature of the loss: Hessian / generalized Gauss-Newton operators and their spectra.

- :func:`hessian` (:mod:`~deepscope.curvature.probe`): top-k eigenvalues, trace and SLQ
  spectral density of the Hessian or GGN, for the whole model and per layer -> HessianResult.
- :class:`CurvatureOperator` (:mod:`~deepscope.curvature.operators`): the matrix-free operator
  ``v -> H v`` / ``G v`` for use with :mod:`deepscope.linalg`.
"""
from deepscope.curvature.operators import CurvatureOperator, parameter_blocks
from deepscope.curvature.probe import QUANTITIES, hessian
from deepscope.curvature.result import COLUMNS, HessianResult

__all__ = ["hessian", "CurvatureOperator", "parameter_blocks", "HessianResult", "COLUMNS",
           "QUANTITIES"]
