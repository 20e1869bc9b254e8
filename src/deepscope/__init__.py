"""deepscope: theory-backed diagnostics for trained neural networks.

The flat API: verbs first (train, load, probes), then building blocks and result types.
Sub-packages hold the details: ``deepscope.data``, ``deepscope.nets``, ``deepscope.train``,
``deepscope.weights``, ``deepscope.report``.
"""
from deepscope.curvature import HessianResult, hessian
from deepscope.data import Dataset, load_dataset
from deepscope.dynamics import NTKMonitor, NTKResult, ntk
from deepscope.generalization import (GapResult, MarginResult, MeasuresResult, margins,
                                      measures, predict_gap)
from deepscope.landscape import (AlignResult, ConnectResult, InterpolationResult,
                                 SurfaceResult, align, connect, interpolate, surface)
from deepscope.errors import (CheckpointError, ConfigError, DataError, DeepscopeError,
                              ModelError, ShapeError, TrainingDivergedError,
                              UntrustedPickleError)
from deepscope.nets import build_model, load_model
from deepscope.representations import CKAResult, GDVResult, cka, gdv
from deepscope.result import Result
from deepscope import train  # the subpackage; callable: deepscope.train(model, data, config)
from deepscope import realization  # the subpackage; callable: deepscope.realization(a, b)
from deepscope.realization import RealizationResult
from deepscope.train import Callback, TrainConfig, TrainResult, evaluate
from deepscope.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from deepscope.weights import SpectraMonitor, SpectraResult, spectra
from deepscope.workflows import train_and_save

__version__ = "0.1.0"

load = load_checkpoint
"""``deepscope.load(path)``: rebuild model, dataset spec and loss from a checkpoint."""

__all__ = [
    # verbs
    "train", "train_and_save", "evaluate", "load", "load_checkpoint", "save_checkpoint",
    "load_dataset", "build_model", "load_model", "spectra", "hessian", "interpolate", "align",
    "connect", "surface",
    "measures", "margins", "predict_gap", "realization", "ntk", "gdv",
    "cka",
    # configuration and callbacks
    "TrainConfig", "Callback", "SpectraMonitor", "NTKMonitor",
    # result types
    "Result", "TrainResult", "Checkpoint", "Dataset", "SpectraResult", "HessianResult",
    "InterpolationResult", "AlignResult", "ConnectResult", "SurfaceResult", "MeasuresResult",
    "RealizationResult", "MarginResult", "GapResult", "NTKResult",
    "GDVResult", "CKAResult",
    # errors
    "DeepscopeError", "ConfigError", "ShapeError", "DataError", "CheckpointError",
    "UntrustedPickleError", "TrainingDivergedError", "ModelError",
]
