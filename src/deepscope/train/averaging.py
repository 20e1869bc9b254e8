"""Iterate averaging: Polyak-Ruppert (equal weights) and exponential moving average.

Built on :class:`torch.optim.swa_utils.AveragedModel`, updated after every optimizer step with
the post-step iterates ``w_1, w_2, ..., w_T``:

* ``"polyak"``: ``w_avg = (1/T) * sum_t w_t`` (running mean; Polyak & Juditsky 1992).
* ``"ema"``: ``e_1 = w_1``, ``e_t = d * e_{t-1} + (1 - d) * w_t`` with ``d = ema_decay``
  (``get_ema_multi_avg_fn``).

Only parameters are averaged. Afterwards the averaged model takes the trained model's buffers,
and BatchNorm running statistics are recomputed for the averaged weights with one pass over
the training data in train mode (cumulative average, like ``swa_utils.update_bn``, but over
deepscope's in-memory batches).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["make_averaged_model", "finalize_averaged_model", "refresh_batchnorm"]


def make_averaged_model(model: nn.Module, averaging: str, ema_decay: float
                        ) -> AveragedModel | None:
    """An ``AveragedModel`` for ``"polyak"``/``"ema"``; ``None`` for ``"none"``."""
    if averaging == "none":
        return None
    if averaging == "polyak":
        return AveragedModel(model)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))


def refresh_batchnorm(model: nn.Module, x: Tensor, batch_size: int) -> bool:
    """Recompute BatchNorm running stats of ``model`` from inputs ``x``; False if it has none.

    Train/eval flags and the BatchNorm momenta are restored afterwards.
    """
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return False
    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the batches
        model.train()
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                model(x[i:i + batch_size])
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, f in flags.items():
            m.training = f
    return True


def finalize_averaged_model(averaged: AveragedModel, trained: nn.Module, x_train: Tensor,
                            batch_size: int) -> nn.Module:
    """The plain averaged module (same class as ``trained``), buffers and BN stats set."""
    module = averaged.module
    if averaged.n_averaged.item() == 0:  # no step was taken: the average is the model itself
        module.load_state_dict(trained.state_dict())
        return module
    src = dict(trained.named_buffers())
    with torch.no_grad():
        for name, b in module.named_buffers():
            if name in src:
                b.copy_(src[name])
    refresh_batchnorm(module, x_train, batch_size)
    return module
