"""Loss-landscape topology and geometry: paths between solutions, alignment, slices.

Building block: :class:`deepscope.landscape.evaluate.PointEvaluator` (loss/accuracy at any
parameter vector, on a private copy of the model, BatchNorm statistics re-estimated).
"""
from deepscope.landscape.evaluate import PointEvaluator

__all__ = ["PointEvaluator"]
