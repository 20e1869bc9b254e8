"""Training callbacks: hooks into :func:`deepscope.train.train` and the state they see.

Order of events in a run::

    on_train_begin   (epoch 0: the row with the metrics at initialization is being built)
    for each epoch 1..E:
        on_epoch_begin
        for each mini-batch: forward, backward, [clip], optimizer step, [lr step], [average]
            on_step_end  (state.step, state.batch_loss, state.lr are those of this step)
        [evaluation]     (state.row gets train/test metrics)
        on_epoch_end     (state.row holds this epoch's metrics; log() adds columns)
    on_train_end

``state.log(name, value)`` adds a column to the current epoch's history row. Rows are kept for
every evaluated epoch and for every epoch in which something was logged (metric columns are
NaN in the latter). Setting ``state.stop = True`` (or calling ``state.request_stop(reason)``)
ends training after the current step (from ``on_step_end``) or epoch; the last epoch is then
evaluated and ``metrics["stop_reason"]`` records the reason.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from deepscope.errors import ConfigError

__all__ = ["Callback", "TrainState", "LambdaCallback", "RecordWeightNorms", "BASE_COLUMNS",
           "HOOKS"]

BASE_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                "time_s")
HOOKS = ("on_train_begin", "on_epoch_begin", "on_step_end", "on_epoch_end", "on_train_end")


class TrainState:
    """What callbacks see (and may change) during :func:`train`.

    Attributes:
        model: the module being trained (a copy of the user's model).
        optimizer, scheduler: the torch optimizer and the per-step lr scheduler (or None).
        averaged_model: the ``AveragedModel`` when ``config.averaging != "none"``, else None.
        config: the :class:`TrainConfig`; dataset: the :class:`Dataset`.
        epoch: current epoch (0 during ``on_train_begin``, then 1-based).
        step: optimizer steps taken so far.
        lr: learning rate used by the latest step (the first step's lr before any step).
        batch_loss: loss of the latest mini-batch as a float (NaN before the first step).
        history: the finished history rows (dicts) so far.
        row: the current epoch's row (``epoch``, ``step``, ``lr``, metrics once evaluated).
        stop, stop_reason: set to end training early.
        steps_per_epoch: optimizer steps in a full epoch.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                 config, dataset, averaged_model=None, steps_per_epoch: int = 0):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.averaged_model = averaged_model
        self.config = config
        self.dataset = dataset
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0
        self.step = 0
        self.lr = float(optimizer.param_groups[0]["lr"])
        self.history: list[dict[str, Any]] = []
        self.row: dict[str, Any] = {}
        self.stop = False
        self.stop_reason: str | None = None
        self._batch_loss: Tensor | float = math.nan
        self._logged = False

    @property
    def batch_loss(self) -> float:
        """Loss of the latest mini-batch (reading it synchronises with an accelerator)."""
        return float(self._batch_loss)

    def log(self, name: str, value: Any) -> None:
        """Add column ``name`` with ``value`` to the current epoch's history row."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"log: column name must be a non-empty string, got {name!r}")
        if name in BASE_COLUMNS:
            raise ConfigError(f"log: column {name!r} is reserved; choose a name other than "
                              f"{', '.join(BASE_COLUMNS)}")
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ConfigError(f"log({name!r}): expected a scalar, got a tensor of shape "
                                  f"{tuple(value.shape)}")
            value = value.item()
        elif not isinstance(value, (int, float, bool, str)) and value is not None:
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise ConfigError(f"log({name!r}): expected a number, bool, str or scalar "
                                  f"tensor, got {type(value).__name__}") from None
        self.row[name] = value
        self._logged = True

    def request_stop(self, reason: str) -> None:
        """End training after the current step/epoch, recording ``reason``."""
        self.stop = True
        self.stop_reason = str(reason)


class Callback:
    """Base class: override any of the hooks; each receives the :class:`TrainState`."""

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_epoch_begin(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def wants(self, hook: str) -> bool:
        """Whether ``hook`` does anything (the trainer skips no-op hooks in its hot loop)."""
        return getattr(type(self), hook) is not getattr(Callback, hook)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda s: ...)``."""

    def __init__(self, on_train_begin: Callable[[TrainState], None] | None = None,
                 on_epoch_begin: Callable[[TrainState], None] | None = None,
                 on_step_end: Callable[[TrainState], None] | None = None,
                 on_epoch_end: Callable[[TrainState], None] | None = None,
                 on_train_end: Callable[[TrainState], None] | None = None):
        fns = dict(on_train_begin=on_train_begin, on_epoch_begin=on_epoch_begin,
                   on_step_end=on_step_end, on_epoch_end=on_epoch_end, on_train_end=on_train_end)
        for hook, fn in fns.items():
            if fn is not None and not callable(fn):
                raise ConfigError(f"LambdaCallback({hook}=...): expected a callable taking the "
                                  f"TrainState, got {type(fn).__name__}")
        self._fns = fns

    def _call(self, hook: str, state: TrainState) -> None:
        fn = self._fns[hook]
        if fn is not None:
            fn(state)

    def on_train_begin(self, state: TrainState) -> None:
        self._call("on_train_begin", state)

    def on_epoch_begin(self, state: TrainState) -> None:
        self._call("on_epoch_begin", state)

    def on_step_end(self, state: TrainState) -> None:
        self._call("on_step_end", state)

    def on_epoch_end(self, state: TrainState) -> None:
        self._call("on_epoch_end", state)

    def on_train_end(self, state: TrainState) -> None:
        self._call("on_train_end", state)

    def wants(self, hook: str) -> bool:
        return self._fns[hook] is not None

    def __repr__(self) -> str:
        hooks = [h for h, f in self._fns.items() if f is not None]
        return f"LambdaCallback({', '.join(hooks)})"


class RecordWeightNorms(Callback):
    """Log the Frobenius norm ``||W||_F`` of every weight matrix/kernel every ``every`` epochs.

    Columns are ``"{prefix}{parameter name}"`` (e.g. ``weight_norm/0.weight``), logged at
    epoch 0 (initialization) and at every epoch divisible by ``every``. Parameters with fewer
    than 2 dimensions (biases, norm-layer scales) are skipped unless ``include_vectors``.
    Norms are computed in float64.
    """

    def __init__(self, every: int = 1, *, include_vectors: bool = False,
                 prefix: str = "weight_norm/"):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"RecordWeightNorms: every must be an integer >= 1, got {every!r}")
        self.every = every
        self.include_vectors = bool(include_vectors)
        self.prefix = str(prefix)

    def _record(self, state: TrainState) -> None:
        with torch.no_grad():
            for name, p in state.model.named_parameters():
                if p.dim() >= 2 or self.include_vectors:
                    state.log(self.prefix + name, float(p.detach().double().norm()))

    def on_train_begin(self, state: TrainState) -> None:
        self._record(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.every == 0:
            self._record(state)

    def __repr__(self) -> str:
        return f"RecordWeightNorms(every={self.every})"


def hooks_of(callbacks, hook: str) -> list[Callable[[TrainState], None]]:
    """Bound methods of the callbacks that implement ``hook`` (in order)."""
    return [getattr(cb, hook) for cb in callbacks if cb.wants(hook)]


def check_callbacks(callbacks) -> list[Callback]:
    """Validate the ``callbacks`` argument: an iterable of :class:`Callback` instances."""
    if isinstance(callbacks, Callback):
        return [callbacks]
    try:
        cbs = list(callbacks)
    except TypeError:
        raise ConfigError(f"callbacks must be a sequence of Callback instances, got "
                          f"{type(callbacks).__name__}") from None
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be Callback instances (deepscope.train.Callback)"
                              f", got {type(cb).__name__}")
    return cbs
