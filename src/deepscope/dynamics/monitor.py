"""Gram-matrix stability during training: :class:`NTKMonitor` (a training Callback).

The lazy-training picture of Du, Zhai, Poczos & Singh (ICLR 2019) and Allen-Zhu, Li & Song
(ICML 2019): in wide nets the weights barely move, few ReLU activation patterns flip, the
Gram matrix H(t) (the empirical NTK on the training inputs) stays close to H(0), and
λ_min(H(t)) stays >= λ0/2, which gives linear convergence. Per evaluated epoch the monitor
measures, on fixed probe inputs:

- ``drift`` = ‖Θ_t − Θ_0‖_F / ‖Θ_0‖_F (empirical NTK, :func:`deepscope.dynamics.ntk.ntk`);
- ``lambda_min``, ``lambda_max`` of Θ_t and ``lambda_min_init`` = λ_min(Θ_0);
- ``flipped``: the fraction of ReLU activation patterns that flipped since initialization,
  i.e. of the entries (probe point, unit) of the pre-activation at every ReLU (``nn.ReLU``
  modules and functional calls) whose sign (> 0: active) differs from the one at
  initialization;
- ``max_displacement``: max over neurons of ‖w_r(t) − w_r(0)‖₂ (Du et al.'s R: a neuron is a
  row of a weight matrix / an output filter of a kernel; a vector parameter counts entrywise),
  ``max_abs_displacement`` = ‖θ_t − θ_0‖_∞, and ``rel_displacement`` = ‖θ_t − θ_0‖₂/‖θ_0‖₂.

Patterns are read by forward *pre*-hooks on the ``nn.ReLU`` modules (so in-place ReLUs read
their input), registered for one eval-mode forward pass and removed afterwards; a ReLU module
called several times in one forward counts each call. Functional calls outside those modules
(``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms) are read by a
:class:`torch.overrides.TorchFunctionMode` during the same pass, keyed ``"relu()#k"`` by their
order in the forward. Other ways to write a ReLU (``clamp(min=0)``, ``max(x, 0)``) are not
seen.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from deepscope._params import eval_mode, params_of
from deepscope.errors import ConfigError
from deepscope.train.callbacks import Callback
from deepscope._precision import ieee_float32

__all__ = ["NTKMonitor", "GramTracker", "activation_patterns", "flipped_fraction",
           "weight_displacement", "MONITOR_COLUMNS"]

#: columns of :attr:`NTKMonitor.table` after ``epoch`` (logged as ``prefix + name``)
MONITOR_COLUMNS = ("drift", "lambda_min", "lambda_max", "lambda_min_init", "flipped",
                   "max_displacement", "max_abs_displacement", "rel_displacement")


_FUNCTIONAL_RELUS = frozenset({torch.relu, torch.relu_, F.relu, F.relu_, Tensor.relu,
                               Tensor.relu_})


class _FunctionalReLUs(TorchFunctionMode):
    """Records ``input > 0`` of functional ReLU calls made outside ``nn.ReLU`` modules."""

    def __init__(self, record):
        super().__init__()
        self.record = record
        self.inside_module = 0  # > 0 while an nn.ReLU module runs (its own F.relu call)
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FUNCTIONAL_RELUS and not self.inside_module and args:
            self.count += 1
            key = "relu()" if self.count == 1 else f"relu()#{self.count}"
            self.record(key, args[0] > 0)
        return func(*args, **kwargs)


@torch.no_grad()
@ieee_float32
def activation_patterns(model: nn.Module, x: Tensor, *, batch_size: int = 1024
                        ) -> dict[str, Tensor]:
    """Boolean activation patterns (pre-activation > 0) at every ReLU on inputs ``x``.

    Keys are ``nn.ReLU`` module names (``"name#2"`` for a module's second call in one
    forward) and ``"relu()"``, ``"relu()#2"``, ... for functional ReLU calls outside those
    modules, in forward order; values are CPU bool tensors of shape (n, ...). The model is
    run in eval mode and left as it was.
    """
    relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    out: dict[str, list[Tensor]] = {}
    dev = next((p.device for p in model.parameters()), x.device)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    x = x.to(device=dev, dtype=dtype) if x.is_floating_point() else x.to(dev)

    def record(key, pattern):
        out.setdefault(key, []).append(pattern.cpu())

    for start in range(0, x.shape[0], batch_size):
        calls: dict[str, int] = {}
        handles = []
        mode = _FunctionalReLUs(record)

        def make(name):
            def pre(module, inputs):
                i = calls.get(name, 0)
                calls[name] = i + 1
                record(name if i == 0 else f"{name}#{i + 1}", inputs[0] > 0)
                mode.inside_module += 1
            return pre

        def leave(module, inputs, output):
            mode.inside_module -= 1

        try:
            for name, m in relus:
                handles.append(m.register_forward_pre_hook(make(name)))
                handles.append(m.register_forward_hook(leave))
            with eval_mode(model), mode:
                model(x[start:start + batch_size])
        finally:
            for h in handles:
                h.remove()
    return {k: torch.cat(v) for k, v in out.items()}


def flipped_fraction(before: dict[str, Tensor], after: dict[str, Tensor]) -> float:
    """Fraction of pattern entries whose sign differs (NaN when there are no ReLUs)."""
    if set(before) != set(after):
        raise ConfigError(f"activation patterns of different ReLU sets: {sorted(before)} vs "
                          f"{sorted(after)}")
    total = sum(v.numel() for v in before.values())
    if total == 0:
        return math.nan
    flips = sum(int((before[k] != after[k]).sum()) for k in before)
    return flips / total


@torch.no_grad()
def weight_displacement(params: dict[str, Tensor], init: dict[str, Tensor]) -> dict[str, float]:
    """``max_displacement`` (max per-neuron ℓ2 change), ``max_abs_displacement`` (ℓ∞) and
    ``rel_displacement`` (‖θ − θ0‖₂/‖θ0‖₂) between two parameter dicts (float64)."""
    max_row = max_abs = 0.0
    diff_sq = init_sq = 0.0
    for name, p in params.items():
        p0 = init[name].to(device=p.device, dtype=torch.float64)
        d = p.detach().double() - p0
        if d.numel() == 0:
            continue
        rows = d.reshape(d.shape[0], -1).norm(dim=1) if d.dim() >= 2 else d.abs()
        max_row = max(max_row, float(rows.max()))
        max_abs = max(max_abs, float(d.abs().max()))
        diff_sq += float((d * d).sum())
        init_sq += float((p0 * p0).sum())
    rel = math.sqrt(diff_sq / init_sq) if init_sq > 0 else math.nan
    return {"max_displacement": max_row, "max_abs_displacement": max_abs,
            "rel_displacement": rel}


class GramTracker:
    """Θ_0, the initial weights and activation patterns of ``model`` on ``probe_x``;
    :meth:`measure` gives the monitor's quantities for a later state of the model.

    ``ntk_options`` go to :func:`deepscope.dynamics.ntk.ntk` (``outputs``, ``method``,
    ``batch_size``, ``dtype``, ...).
    """

    def __init__(self, model: nn.Module, probe_x: Tensor, **ntk_options: Any):
        from deepscope.dynamics.ntk import ntk, probe_inputs
        self.probe_x = probe_inputs(probe_x)
        self.options = dict(ntk_options, progress=False)
        self._ntk = ntk
        first = ntk(model, self.probe_x, **self.options)
        self.gram0 = first.gram.double()
        self.norm0 = float(self.gram0.norm())
        self.lambda_min0 = first.summary["lambda_min"]
        self.init = params_of(model)
        self.patterns0 = activation_patterns(model, self.probe_x)
        self.last = first

    def measure(self, model: nn.Module) -> dict[str, float]:
        res = self._ntk(model, self.probe_x, **self.options)
        self.last = res
        drift = float((res.gram.double() - self.gram0).norm()) / self.norm0 \
            if self.norm0 > 0 else math.nan
        row = {"drift": drift, "lambda_min": res.summary["lambda_min"],
               "lambda_max": res.summary["lambda_max"], "lambda_min_init": self.lambda_min0,
               "flipped": flipped_fraction(self.patterns0,
                                           activation_patterns(model, self.probe_x))}
        row.update(weight_displacement(params_of(model, clone=False), self.init))
        return row


class NTKMonitor(Callback):
    """Training callback: Gram-matrix stability on fixed probe inputs every ``every`` epochs.

    Args:
        probe_x: probe inputs (n, ...) (or an ``(x, y)`` pair / Dataset; see
            :func:`deepscope.dynamics.ntk.probe_inputs`); keep n small (tens to hundreds).
        every: period in epochs (>= 1); epoch 0 (initialization) is always measured.
        prefix: history column prefix (columns ``prefix + MONITOR_COLUMNS``).
        **ntk_options: for :func:`deepscope.dynamics.ntk.ntk` (``outputs="sum"``, ``method``,
            ``batch_size``, ``dtype``).

    After training, :attr:`table` has one row per measured epoch and :meth:`result` wraps it
    in a Result (kind ``"ntk-monitor"``); :attr:`eigenvalues` maps epoch -> Θ_t's spectrum.
    """

    def __init__(self, probe_x, every: int = 1, *, prefix: str = "ntk/", **ntk_options: Any):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be an integer >= 1, got {every!r}")
        from deepscope.dynamics.ntk import probe_inputs
        self.probe_x = probe_inputs(probe_x)
        self.every = every
        self.prefix = str(prefix)
        self.ntk_options = dict(ntk_options)
        self.tracker: GramTracker | None = None
        self._rows: list[dict[str, Any]] = []
        self.eigenvalues: dict[int, Any] = {}

    def _record(self, state, epoch: int) -> None:
        row = self.tracker.measure(state.model)
        self.eigenvalues[epoch] = self.tracker.last.eigenvalues
        self._rows.append({"epoch": epoch, **row})
        for name in MONITOR_COLUMNS:
            state.log(self.prefix + name, row[name])

    def on_train_begin(self, state) -> None:
        self._rows, self.eigenvalues = [], {}
        self.tracker = GramTracker(state.model, self.probe_x, **self.ntk_options)
        self._record(state, 0)

    def on_epoch_end(self, state) -> None:
        if state.epoch % self.every == 0:
            self._record(state, state.epoch)

    @property
    def table(self) -> pd.DataFrame:
        """One row per measured epoch: ``epoch`` then :data:`MONITOR_COLUMNS`."""
        return pd.DataFrame(self._rows, columns=["epoch", *MONITOR_COLUMNS])

    def result(self):
        from deepscope.result import Result
        t = self.table
        summary = {"epochs": len(t), "num_probe": int(self.probe_x.shape[0])}
        if len(t):
            last = t.iloc[-1]
            summary.update({f"final_{c}": float(last[c]) for c in MONITOR_COLUMNS})
            summary["min_lambda_min_ratio"] = float((t["lambda_min"] / t["lambda_min_init"])
                                                    .min())
        return Result("ntk-monitor", t, summary=summary,
                      settings={"every": self.every, **{k: str(v) if isinstance(v, torch.dtype)
                                                         else v
                                                         for k, v in self.ntk_options.items()}})

    def __repr__(self) -> str:
        return f"NTKMonitor(n={int(self.probe_x.shape[0])}, every={self.every})"
