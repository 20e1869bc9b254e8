"""Loss-landscape topology and geometry: paths between solutions, alignment, slices.

Building block: :class:`deepscope.landscape.evaluate.PointEvaluator` (loss/accuracy at any
parameter vector, on a private copy of the model, BatchNorm statistics re-estimated).
"""
from deepscope.landscape.align import align
from deepscope.landscape.connect import connect
from deepscope.landscape.evaluate import PointEvaluator
from deepscope.landscape.interpolate import interpolate
from deepscope.landscape.result_connect import ConnectResult
from deepscope.landscape.result_paths import AlignResult, InterpolationResult
from deepscope.landscape.result_surface import SurfaceResult
from deepscope.landscape.surface import surface

__all__ = ["PointEvaluator", "interpolate", "align", "connect", "surface",
           "InterpolationResult", "AlignResult", "ConnectResult", "SurfaceResult"]
