"""Optimizers and learning-rate schedules from a :class:`TrainConfig`.

Schedules are stepped **once per optimizer step** (not per epoch), with their time axis in
epochs, so warm-up is smooth even over a fraction of an epoch. With ``S`` optimizer steps per
epoch, ``E = config.epochs`` and ``W = round(warmup_epochs * S)`` warm-up steps, optimizer step
``s = 0, 1, ...`` uses ``lr * factor(s)`` where ``factor(s) = warmup(s) * main(s)``::

    warmup(s)   = (s + 1) / W                if s < W, else 1        (linear, ends at lr)
    constant    = 1
    step        = gamma ** floor(s / (step_size * S))  (decays at absolute epoch boundaries,
                                                        like StepLR stepped per epoch)
    cosine      = (1 + cos(pi * (s - W) / (E*S - W))) / 2   for s >= W   (annealed to 0 at the
                                                        cap E; warm-up steps use main = 1)

The factor is implemented as one :class:`torch.optim.lr_scheduler.LambdaLR` (composing the
warm-up into the lambda is simpler and exact, where ``SequentialLR`` would restart the main
schedule's clock at the milestone and break the absolute epoch boundaries of ``step``).
A constant schedule without warm-up builds no scheduler at all (nothing to do per step).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from deepscope.train.config import TrainConfig

__all__ = ["make_optimizer", "lr_factor_fn", "lr_at", "make_scheduler"]


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The torch optimizer named by ``config.optimizer`` with its hyper-parameters."""
    params = list(params)
    c = config
    eps = {} if c.eps is None else {"eps": c.eps}
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                               weight_decay=c.weight_decay)
    if c.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=c.lr, weight_decay=c.weight_decay, **eps)
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum,
                                   weight_decay=c.weight_decay, **eps)
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay,
                                **eps)
    if c.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay,
                                 **eps)
    raise AssertionError(f"validated optimizer {c.optimizer!r} not handled")  # pragma: no cover


def lr_factor_fn(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """``factor(s)``: the multiplier of ``config.lr`` at optimizer step ``s`` (0-based)."""
    spe = max(int(steps_per_epoch), 1)
    warm = int(round(config.warmup_epochs * spe))
    total = config.epochs * spe
    schedule, gamma, step_every = config.schedule, config.gamma, config.step_size * spe

    def factor(s: int) -> float:
        f = (s + 1) / warm if s < warm else 1.0
        if schedule == "step":
            f *= gamma ** (s // step_every)
        elif schedule == "cosine" and s >= warm and total > warm:
            f *= 0.5 * (1.0 + math.cos(math.pi * (s - warm) / (total - warm)))
        return f

    return factor


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate used by optimizer step ``step`` (0-based)."""
    return config.lr * lr_factor_fn(config, steps_per_epoch)(step)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step ``LambdaLR`` (or ``None`` for a constant schedule without warm-up).

    Constructing it sets the optimizer's lr to ``lr * factor(0)``; call ``.step()`` after
    every ``optimizer.step()``.
    """
    if config.schedule == "constant" and config.warmup_epochs == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(config, steps_per_epoch))
