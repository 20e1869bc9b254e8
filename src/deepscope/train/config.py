"""``TrainConfig``: every hyper-parameter of a training run, validated and JSON-round-trippable.

The config is the training part of a run's identity (checkpoints store ``to_dict()`` in their
metadata, sweeps hash it), so it only holds plain JSON values and is validated eagerly:
a wrong name, type or value raises :class:`~deepscope.errors.ConfigError` at construction,
saying what was expected and what arrived.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deepscope.errors import ConfigError, unknown_name

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "AVERAGING", "LOSSES"]

OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
AVERAGING = ("none", "polyak", "ema")
LOSSES = ("cross_entropy", "mse")

# Optimizers that accept a momentum term / betas (everything else rejects a non-default value,
# so that a sweep never silently trains with a setting it believes it changed).
_MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
_BETAS_OPTIMIZERS = ("adam", "adamw")


def _is_int(v: Any) -> bool:
    # numbers.Integral also admits numpy integers (sweep grids, DataFrame rows)
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`deepscope.train.train`.

    Optimizer:
        optimizer: ``"sgd" | "adagrad" | "rmsprop" | "adam" | "adamw"`` (torch.optim classes).
        lr: base learning rate (>= 0).
        momentum: heavy-ball momentum for ``sgd`` and ``rmsprop`` (must stay 0 for the others).
        nesterov: Nesterov momentum (``sgd`` only; needs ``momentum > 0``).
        weight_decay: L2 penalty (decoupled for ``adamw``). Default 0 for every optimizer,
            including ``adamw`` (whose torch default is 0.01).
        betas: ``(beta1, beta2)`` for ``adam``/``adamw``.
        eps: numerical epsilon of ``adagrad``/``rmsprop``/``adam``/``adamw``; ``None`` uses each
            torch optimizer's own default (1e-10 for adagrad, 1e-8 for the others).

    Loop:
        batch_size, epochs (the cap: at most this many passes over the training set),
        target_loss: stop after the first epoch whose full-pass training loss (eval mode,
            whole training set) is ``<= target_loss``; the loss is checked every epoch when set.
        shuffle: reshuffle the training set every epoch (order drawn from ``seed``).
        drop_last: drop the last incomplete mini-batch of each epoch.
        eval_every: compute train/test metrics every this many epochs (and always at epoch 0,
            at the last epoch and at the epoch where training stops).

    Learning-rate schedule (stepped once per optimizer step, see :mod:`.schedules`):
        schedule: ``"constant" | "step" | "cosine"``.
        step_size, gamma: for ``"step"``, multiply the lr by ``gamma`` every ``step_size`` epochs.
        warmup_epochs: linear warm-up over this many epochs (may be fractional); multiplies
            whichever schedule is chosen.

    Other:
        clip_grad_norm: clip the global gradient 2-norm to this value before each step.
        averaging: ``"none" | "polyak" | "ema"``: the returned model is the running average of
            the iterates (equal weights, or exponential with ``ema_decay``).
        loss: ``"cross_entropy" | "mse"``; ``None`` picks by the dataset's task.
        seed: shuffling, dropout (and model construction from an arch spec) derive from it.
        device: where training runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None
    batch_size: int = 32
    epochs: int = 20
    target_loss: float | None = None
    shuffle: bool = True
    drop_last: bool = False
    eval_every: int = 1
    schedule: str = "constant"
    step_size: int = 10
    gamma: float = 0.1
    warmup_epochs: float = 0
    clip_grad_norm: float | None = None
    averaging: str = "none"
    ema_decay: float = 0.999
    loss: str | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._validate()

    # -- validation -------------------------------------------------------------------------

    def _check_name(self, key: str, choices: tuple[str, ...], *, optional: bool = False) -> None:
        v = getattr(self, key)
        if optional and v is None:
            return
        if not isinstance(v, str) or v not in choices:
            raise unknown_name(key, v, choices)

    def _check_number(self, key: str, *, low: float | None = None, high: float | None = None,
                      low_open: bool = False, high_open: bool = False, optional: bool = False,
                      integer: bool = False) -> None:
        v = getattr(self, key)
        if optional and v is None:
            return
        kind = "an integer" if integer else "a number"
        ok_type = _is_int(v) if integer else _is_number(v)
        if not ok_type:
            extra = " or None" if optional else ""
            raise ConfigError(f"{key} must be {kind}{extra}, got {v!r} ({type(v).__name__})")
        if integer:
            v = int(v)
        else:
            v = float(v)
            if not math.isfinite(v):
                raise ConfigError(f"{key} must be finite, got {v!r}")
        setattr(self, key, v)
        bad_low = low is not None and (v <= low if low_open else v < low)
        bad_high = high is not None and (v >= high if high_open else v > high)
        if bad_low or bad_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            rng = " and ".join(s for s in (lo, hi) if s)
            raise ConfigError(f"{key} must be {rng}, got {v!r}")

    def _check_bool(self, key: str) -> None:
        v = getattr(self, key)
        if not isinstance(v, (bool, np.bool_)):
            raise ConfigError(f"{key} must be True or False, got {v!r} ({type(v).__name__})")
        setattr(self, key, bool(v))

    def _validate(self) -> None:
        self._check_name("optimizer", OPTIMIZERS)
        self._check_name("schedule", SCHEDULES)
        self._check_name("averaging", AVERAGING)
        self._check_name("loss", LOSSES, optional=True)
        self._check_number("lr", low=0.0)
        self._check_number("momentum", low=0.0, high=1.0, high_open=True)
        self._check_number("weight_decay", low=0.0)
        self._check_number("eps", low=0.0, low_open=True, optional=True)
        self._check_number("batch_size", low=1, integer=True)
        self._check_number("epochs", low=0, integer=True)
        self._check_number("target_loss", low=0.0, optional=True)
        self._check_number("eval_every", low=1, integer=True)
        self._check_number("step_size", low=1, integer=True)
        self._check_number("gamma", low=0.0, high=1.0, low_open=True)
        self._check_number("warmup_epochs", low=0.0)
        if float(self.warmup_epochs).is_integer():
            self.warmup_epochs = int(self.warmup_epochs)
        self._check_number("clip_grad_norm", low=0.0, low_open=True, optional=True)
        self._check_number("ema_decay", low=0.0, high=1.0, high_open=True)
        self._check_number("seed", low=0, integer=True)
        for key in ("nesterov", "shuffle", "drop_last"):
            self._check_bool(key)
        self._validate_betas()
        self._validate_device()
        self._validate_combinations()

    def _validate_betas(self) -> None:
        b = self.betas
        if (not isinstance(b, (tuple, list)) or len(b) != 2
                or not all(_is_number(x) for x in b)):
            raise ConfigError(f"betas must be a pair of numbers (beta1, beta2), got {b!r}")
        b = (float(b[0]), float(b[1]))
        if not all(0.0 <= x < 1.0 for x in b):
            raise ConfigError(f"betas must both lie in [0, 1), got {b!r}")
        self.betas = b

    def _validate_device(self) -> None:
        d = self.device
        if isinstance(d, torch.device):
            d = str(d)
        if not isinstance(d, str):
            raise ConfigError(f"device must be a string like 'cpu' or 'cuda:0', got {d!r}")
        try:
            torch.device(d)
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"device must be a torch device string like 'cpu' or 'cuda:0', "
                              f"got {d!r}") from e
        self.device = d

    def _validate_combinations(self) -> None:
        if self.nesterov and self.optimizer != "sgd":
            raise ConfigError(f"nesterov=True needs optimizer 'sgd', got {self.optimizer!r}")
        if self.nesterov and self.momentum <= 0:
            raise ConfigError(f"nesterov=True needs momentum > 0, got momentum={self.momentum!r}")
        if self.momentum != 0 and self.optimizer not in _MOMENTUM_OPTIMIZERS:
            raise ConfigError(f"momentum applies to optimizers {', '.join(_MOMENTUM_OPTIMIZERS)};"
                              f" got momentum={self.momentum!r} with {self.optimizer!r}"
                              f" (adam/adamw use betas)")
        if self.betas != (0.9, 0.999) and self.optimizer not in _BETAS_OPTIMIZERS:
            raise ConfigError(f"betas apply to optimizers {', '.join(_BETAS_OPTIMIZERS)}; "
                              f"got betas={self.betas!r} with {self.optimizer!r}")
        if self.eps is not None and self.optimizer == "sgd":
            raise ConfigError(f"eps applies to adagrad, rmsprop, adam, adamw; got eps={self.eps!r}"
                              f" with 'sgd'")

    # -- (de)serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON values (``betas`` as a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a (possibly partial) dict; missing keys take their defaults.

        Unknown keys raise :class:`ConfigError` naming the key.
        """
        if isinstance(d, TrainConfig):
            return dataclasses.replace(d)
        if not isinstance(d, dict):
            raise ConfigError(f"train config must be a dict, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise unknown_name("train config key", key, names)
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (validated; unknown keys raise ConfigError)."""
        return type(self).from_dict({**self.to_dict(), **changes})

