"""deepscope: theory-backed diagnostics for trained neural networks."""
from deepscope.errors import (CheckpointError, ConfigError, DataError, DeepscopeError,
                              ModelError, ShapeError, TrainingDivergedError,
                              UntrustedPickleError)
from deepscope.result import Result

__version__ = "0.1.0"

__all__ = [
    # result types
    "Result",
    # errors
    "DeepscopeError", "ConfigError", "ShapeError", "DataError", "CheckpointError",
    "UntrustedPickleError", "TrainingDivergedError", "ModelError",
]
