"""``deepscope.train``: the training harness (config, loop, callbacks, evaluation).

``train(model, dataset, config)`` trains a *copy* of ``model`` and returns a
:class:`TrainResult` with the trained model, a per-epoch history DataFrame, final metrics and
the initial parameters. Learning-rate schedules step once per optimizer step (see
:mod:`deepscope.train.optim`); see :mod:`deepscope.train.loop` for the determinism and
history contracts.
"""
import sys as _sys
import types as _types

from deepscope.train.callbacks import Callback, LambdaCallback, RecordWeightNorms, TrainState
from deepscope.train.config import TrainConfig
from deepscope.train.evaluate import evaluate
from deepscope.train.loop import TrainResult, train
from deepscope.train.optim import lr_at, lr_factor_fn, make_optimizer, make_scheduler



class _CallableTrainModule(_types.ModuleType):
    """Lets ``deepscope.train(...)`` call :func:`train` while ``deepscope.train`` stays the
    subpackage (``deepscope.train.TrainConfig``, ``import deepscope.train.loop`` keep working)."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableTrainModule

__all__ = [
    # verbs
    "train", "evaluate",
    # config and results
    "TrainConfig", "TrainResult",
    # callbacks
    "Callback", "TrainState", "LambdaCallback", "RecordWeightNorms",
    # building blocks
    "make_optimizer", "make_scheduler", "lr_factor_fn", "lr_at",
]
