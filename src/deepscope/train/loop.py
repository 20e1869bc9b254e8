"""The training loop: :func:`train` -> :class:`TrainResult`.

Contracts:

* **The user's model is never trained in place.** An ``nn.Module`` argument is deep-copied and
  the copy is trained and returned (in eval mode); the argument keeps its weights, buffers,
  train/eval flags and ``requires_grad`` flags. An arch-spec dict is built with
  ``deepscope.nets.build_model(spec, seed=config.seed)`` (``input_shape``/``num_outputs``
  filled from the dataset when absent).
* **Determinism.** Mini-batch order comes from a ``torch.Generator`` seeded with
  ``config.seed``; dropout (and anything else drawing from the global RNG) runs inside
  ``torch.random.fork_rng`` after ``torch.manual_seed`` of a seed derived from ``config.seed``,
  so the caller's global RNG state is unchanged afterwards. On CPU the same config gives
  bitwise-equal weights. (No global switches such as ``use_deterministic_algorithms`` are
  flipped; on GPU, cuBLAS/cuDNN may still be non-deterministic.)
* **Hot loop.** Mini-batches are cheap index slices of tensors moved to the device once
  (``deepscope.data.batches``, not a DataLoader); nothing is allocated per step for the
  history. Divergence is detected per step: on CPU by reading the loss (no sync cost there);
  on accelerators the per-step losses are kept on the device and checked once per epoch (one
  synchronisation), so the error still names the first non-finite step.
* **History.** One row per evaluated epoch (epoch 0 = at initialization): ``epoch``, ``step``
  (optimizer steps so far), ``lr`` (used by the epoch's last step; at epoch 0 the first step's),
  ``train_loss``/``train_acc`` (full pass over the training set in eval mode),
  ``test_loss``/``test_acc``, ``time_s`` (wall seconds since the start), then callback columns.
  Accuracies are NaN for regression targets.
* **Averaging.** With ``averaging != "none"`` the returned model is the averaged one (BatchNorm
  statistics recomputed for it). The history tracks the optimized iterate; ``metrics`` describes
  the returned model, with the last iterate's values under ``iterate_*`` keys.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._device import resolve_device
from deepscope._params import params_of
from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, DataError, ModelError, TrainingDivergedError
from deepscope.train.averaging import finalize_averaged_model, make_averaged_model
from deepscope.train.callbacks import (BASE_COLUMNS, Callback, TrainState, check_callbacks,
                                       hooks_of)
from deepscope.train.config import TrainConfig
from deepscope.train.evaluate import (check_loss_fits, default_loss, evaluate_tensors,
                                      loss_function, model_device_dtype)
from deepscope.train.optim import lr_at, make_optimizer, make_scheduler

__all__ = ["train", "TrainResult"]

EVAL_BATCH_SIZE = 1024
_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the trained copy (the averaged model when ``config.averaging != "none"``),
            in eval mode.
        history: DataFrame, one row per evaluated epoch (see :mod:`deepscope.train.loop`).
        metrics: the final history row plus ``epochs_run``, ``steps``, ``stopped_early``,
            ``stop_reason`` and ``loss_name`` (the loss actually used: ``config.loss`` or the
            task's default); JSON-serializable (NaN accuracies for regression).
        init_params: ``name -> tensor`` clones of the parameters before the first step.
        config: the :class:`TrainConfig` used (overrides applied).
        dataset: the :class:`deepscope.data.Dataset` trained on (loaded when given by name).
    """

    model: nn.Module
    history: pd.DataFrame
    metrics: dict[str, Any]
    init_params: dict[str, Tensor]
    config: TrainConfig
    dataset: Any = None

    def __repr__(self) -> str:
        m = self.metrics
        return (f"TrainResult({type(self.model).__name__}, epochs_run={m.get('epochs_run')}, "
                f"steps={m.get('steps')}, train_loss={m.get('train_loss'):.4g}, "
                f"test_loss={m.get('test_loss'):.4g}, test_acc={m.get('test_acc'):.4g}, "
                f"stop_reason={m.get('stop_reason')!r})")


# -- argument resolution ----------------------------------------------------------------------

def _resolve_config(config, overrides: dict[str, Any]) -> TrainConfig:
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, TrainConfig):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise ConfigError(f"config must be a TrainConfig, a dict or None, got "
                          f"{type(config).__name__}")
    return TrainConfig.from_dict({**base, **overrides})


def _resolve_dataset(dataset):
    from deepscope.data import Dataset
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, (str, dict)):
        from deepscope.data import load_dataset
        return load_dataset(dataset)
    raise ConfigError(f"dataset must be a deepscope Dataset, a dataset name or a spec dict, "
                      f"got {type(dataset).__name__}")


def _resolve_model(model, dataset, config: TrainConfig) -> nn.Module:
    if isinstance(model, nn.Module):
        try:
            net = copy.deepcopy(model)
        except Exception as e:  # noqa: BLE001 - any failure means we cannot train a copy
            raise ModelError(f"cannot copy the model to train it (deepscope never trains the "
                             f"caller's model in place): {type(e).__name__}: {e}") from e
    elif isinstance(model, dict):
        from deepscope.nets import build_model
        spec = dict(model)
        spec.setdefault("input_shape", list(dataset.input_shape))
        spec.setdefault("num_outputs", dataset.num_outputs)
        net = build_model(spec, seed=config.seed)
    else:
        raise ConfigError(f"model must be an nn.Module or an arch spec dict, got "
                          f"{type(model).__name__}")
    return net.to(torch.device(config.device))


def _fork_devices(device: torch.device) -> list[int]:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def _check_loss_each_step(device: torch.device) -> bool:
    """Read the loss on the host every step (free on CPU; a sync on accelerators)."""
    return device.type == "cpu"


def _dropout_seed(seed: int) -> int:
    """Global-RNG seed for dropout etc., distinct from the shuffling stream of ``seed``."""
    return int(np.random.SeedSequence([seed, 0x6D6F6465]).generate_state(1, np.uint64)[0] >> 1)


# -- the loop ---------------------------------------------------------------------------------

class _Run:
    """One training run; split out of :func:`train` to keep each piece readable."""

    def __init__(self, net: nn.Module, dataset, config: TrainConfig, callbacks: list[Callback],
                 progress: bool):
        self.net, self.dataset, self.config = net, dataset, config
        self.loss_name = config.loss or default_loss(dataset.task)
        check_loss_fits(self.loss_name, dataset.y_train)
        self.loss_fn = loss_function(self.loss_name)
        device, dtype = model_device_dtype(net)
        self.device = device
        cast = (lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype))
        self.x_train, self.y_train = cast(dataset.x_train), cast(dataset.y_train)
        self.x_test, self.y_test = cast(dataset.x_test), cast(dataset.y_test)
        n = self.x_train.shape[0]
        if n == 0:
            raise DataError("cannot train on an empty training set (0 examples)")
        bs = config.batch_size
        self.steps_per_epoch = n // bs if config.drop_last else -(-n // bs)
        if self.steps_per_epoch == 0 and config.epochs > 0:
            raise ConfigError(f"batch_size must be <= the {n} training examples with "
                              f"drop_last=True, got batch_size={bs} (no step per epoch)")
        self.params = [p for p in net.parameters() if p.requires_grad]
        if not self.params:
            raise ModelError("the model has no trainable parameters (requires_grad=True)")
        self.optimizer = make_optimizer(self.params, config)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.averaged = make_averaged_model(net, config.averaging, config.ema_decay)
        self.state = TrainState(model=net, optimizer=self.optimizer, scheduler=self.scheduler,
                                config=config, dataset=dataset, averaged_model=self.averaged,
                                steps_per_epoch=self.steps_per_epoch)
        self.callbacks = callbacks
        self.hooks = {h: hooks_of(callbacks, h) for h in
                      ("on_train_begin", "on_epoch_begin", "on_step_end", "on_epoch_end",
                       "on_train_end")}
        self.progress = progress
        self.t0 = time.perf_counter()

    # evaluation ---------------------------------------------------------------------------

    def _metrics(self, model: nn.Module) -> dict[str, float]:
        tr_loss, tr_acc = evaluate_tensors(model, self.x_train, self.y_train, self.loss_name,
                                           EVAL_BATCH_SIZE)
        te_loss, te_acc = evaluate_tensors(model, self.x_test, self.y_test, self.loss_name,
                                           EVAL_BATCH_SIZE)
        return {"train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss,
                "test_acc": te_acc}

    def _evaluate_into(self, row: dict[str, Any]) -> None:
        m = self._metrics(self.net)
        if self.state.epoch > 0 and not math.isfinite(m["train_loss"]):
            s = self.state
            raise TrainingDivergedError(
                f"training diverged: full-pass train loss is {m['train_loss']} after epoch "
                f"{s.epoch}, step {s.step} (lr={s.lr:g}); try a smaller learning rate",
                epoch=s.epoch, step=s.step)
        row.update(m)
        row["time_s"] = time.perf_counter() - self.t0

    def _new_row(self) -> dict[str, Any]:
        s = self.state
        row: dict[str, Any] = {"epoch": s.epoch, "step": s.step, "lr": s.lr}
        row.update(dict.fromkeys(_METRICS, math.nan))
        row["time_s"] = time.perf_counter() - self.t0
        return row

    def _diverged(self, value: float, epoch: int, step: int) -> TrainingDivergedError:
        lr = lr_at(self.config, step - 1, self.steps_per_epoch)
        return TrainingDivergedError(
            f"training diverged: loss is {value} at epoch {epoch}, step {step} (lr={lr:g}); "
            f"try a smaller learning rate", epoch=epoch, step=step)

    # one epoch ----------------------------------------------------------------------------

    def _epoch(self, epoch: int, gen: torch.Generator | None) -> None:
        from deepscope.data import batches
        state, cfg = self.state, self.config
        net, loss_fn, opt, sched, avg = (self.net, self.loss_fn, self.optimizer, self.scheduler,
                                         self.averaged)
        clip, params = cfg.clip_grad_norm, self.params
        step_hooks = self.hooks["on_step_end"]
        group = opt.param_groups[0]
        on_cpu = _check_loss_each_step(self.device)
        deferred: list[Tensor] = []
        step = state.step
        first_step = step + 1
        lr = state.lr
        for xb, yb in batches(self.x_train, self.y_train, cfg.batch_size, shuffle=cfg.shuffle,
                              generator=gen, drop_last=cfg.drop_last):
            lr = group["lr"]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            step += 1
            if on_cpu:
                value = loss.item()
                if not math.isfinite(value):
                    raise self._diverged(value, epoch, step)
            else:
                value = loss.detach()
                deferred.append(value)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if sched is not None:
                sched.step()
            if avg is not None:
                avg.update_parameters(net)
            if step_hooks:
                state.step, state.lr, state._batch_loss = step, lr, value
                for hook in step_hooks:
                    hook(state)
                if state.stop:
                    break
        state.step, state.lr = step, lr
        if deferred:
            finite = torch.isfinite(torch.stack(deferred))
            if not bool(finite.all()):
                i = int((~finite).nonzero()[0, 0])
                raise self._diverged(float(deferred[i]), epoch, first_step + i)
            state._batch_loss = deferred[-1]
        elif on_cpu and step >= first_step:
            state._batch_loss = value

    # the run ------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        state, cfg, net = self.state, self.config, self.net
        init_params = params_of(net)
        net.train()
        state.row = row = self._new_row()
        self._evaluate_into(row)
        for hook in self.hooks["on_train_begin"]:
            hook(state)
        state.history.append(row)
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.shuffle else None
        bar = progress_bar(range(1, cfg.epochs + 1), enabled=self.progress, desc="train",
                           unit="epoch")
        reached = False
        try:
            self._postfix(bar, row)
            for epoch in bar:
                if state.stop:  # requested in on_train_begin
                    break
                state.epoch, state._logged = epoch, False
                state.row = {}
                for hook in self.hooks["on_epoch_begin"]:
                    hook(state)
                self._epoch(epoch, gen)
                logged, state.row = state.row, self._new_row()
                state.row.update(logged)
                row = state.row
                evaluated = (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or state.stop
                             or cfg.target_loss is not None)
                if evaluated:
                    self._evaluate_into(row)
                for hook in self.hooks["on_epoch_end"]:
                    hook(state)
                if state.stop and not evaluated:
                    self._evaluate_into(row)
                    evaluated = True
                if evaluated or state._logged:
                    state.history.append(row)
                if evaluated:
                    self._postfix(bar, row)
                if cfg.target_loss is not None and row["train_loss"] <= cfg.target_loss:
                    reached = True
                    state.stop_reason = (f"target_loss reached: train_loss "
                                         f"{row['train_loss']:.6g} <= {cfg.target_loss:g}")
                    break
                if state.stop:
                    break
        finally:
            bar.close()
        if state.stop and not reached:
            state.stop_reason = state.stop_reason or "stopped by a callback"
        for hook in self.hooks["on_train_end"]:
            hook(state)
        return self._result(init_params, stopped=reached or state.stop)

    def _postfix(self, bar, row: dict[str, Any]) -> None:
        if not self.progress:
            return
        post = {"loss": f"{row['train_loss']:.4g}"}
        if not math.isnan(row["test_acc"]):
            post["test_acc"] = f"{row['test_acc']:.3f}"
        else:
            post["test_loss"] = f"{row['test_loss']:.4g}"
        bar.set_postfix(post, refresh=False)

    def _result(self, init_params: dict[str, Tensor], stopped: bool) -> TrainResult:
        state, cfg = self.state, self.config
        history = pd.DataFrame(state.history)
        extra = [c for c in history.columns if c not in BASE_COLUMNS]
        history = history[list(BASE_COLUMNS) + extra]
        history["epoch"] = history["epoch"].astype(int)
        history["step"] = history["step"].astype(int)
        metrics: dict[str, Any] = {k: _plain(v) for k, v in state.history[-1].items()}
        model = self.net
        if self.averaged is not None:
            model = finalize_averaged_model(self.averaged, self.net, self.x_train,
                                            cfg.batch_size)
            for k in _METRICS:
                metrics[f"iterate_{k}"] = metrics[k]
            metrics.update(self._metrics(model))
        model.eval()
        metrics.update(epochs_run=int(state.history[-1]["epoch"]), steps=int(state.step),
                       stopped_early=bool(stopped), stop_reason=state.stop_reason,
                       loss_name=self.loss_name)
        return TrainResult(model=model, history=history, metrics=metrics,
                           init_params=init_params, config=cfg, dataset=self.dataset)


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def train(model: nn.Module | dict[str, Any], dataset, config: TrainConfig | dict | None = None,
          *, callbacks: Iterable[Callback] = (), progress: bool = True,
          **overrides: Any) -> TrainResult:
    """Train a copy of ``model`` on ``dataset``; return it with its history and metrics.

    Args:
        model: an ``nn.Module`` (deep-copied: the caller's module is never changed) or an
            architecture spec dict for ``deepscope.nets.build_model`` (built with
            ``seed=config.seed``; ``input_shape``/``num_outputs`` default to the dataset's).
        dataset: a :class:`deepscope.data.Dataset`, or a dataset name / spec dict for
            ``deepscope.data.load_dataset``.
        config: a :class:`TrainConfig` (or dict); ``None`` means the defaults.
        callbacks: :class:`Callback` instances, called in order.
        progress: show a tqdm bar over epochs (train loss and test accuracy in its postfix).
        **overrides: TrainConfig fields that replace the config's (``lr=0.01``, ...).

    Returns:
        :class:`TrainResult` (model in eval mode, history, metrics, init_params, config).

    Raises:
        ConfigError: unknown/invalid option, a loss that does not fit the targets, ...
        TrainingDivergedError: the loss became NaN/inf; ``.epoch`` and ``.step`` say where.
    """
    cfg = _resolve_config(config, overrides)
    cbs = check_callbacks(callbacks)
    if not isinstance(progress, bool):
        raise ConfigError(f"progress must be True or False, got {progress!r}")
    data = _resolve_dataset(dataset)
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=_fork_devices(device)):
        net = _resolve_model(model, data, cfg)
        torch.manual_seed(_dropout_seed(cfg.seed))
        return _Run(net, data, cfg, cbs, progress).run()
