"""Normalized margin distributions at several layers (Jiang, Krishnan, Mobahi & Bengio,
"Predicting the generalization gap in deep networks with margin distributions", ICLR 2019).

For a point ``x`` with true class ``i`` let ``j`` be the highest other logit (for a
misclassified point: the predicted class). The first-order distance of the point to the
decision boundary between ``i`` and ``j``, measured in the space of layer ``l``'s output
``h_l``, is (Eq. 3 of the paper)::

    d_l(x) = (f_i(x) - f_j(x)) / sqrt( ||∇_{h_l} (f_i - f_j)(x)||_2^2 + eps ),   eps = 1e-6

(``eps`` is added to the squared gradient norm, inside the square root, so a zero gradient
gives a finite margin). The margin is then made scale-free by the layer's total variation
over the whole training set, ``ν_l = sqrt(tr Cov(h_l))`` (Eq. 4), computed in one streaming
pass (Chan et al.'s pairwise mean / sum-of-squares merge in float64, unbiased ``1/(n-1)``
covariance, the same as ``np.trace(np.cov(H, rowvar=False))``)::

    d̂_l(x) = d_l(x) / ν_l.

The gradients at every layer come from ONE backward pass of ``Σ_x (f_i - f_j)(x)`` over a
batch: the model runs in eval mode (no batch statistics, dropout off), so sample ``x``'s
logits depend only on ``x`` and the gradient of the sum with respect to ``h_l[x]`` is exactly
the per-sample gradient. Hidden outputs are captured with forward hooks on a private deep
copy of the model; the user's model is never touched.

Default layers (four, as in the paper: the input plus three hidden stages):

- every model: ``"input"`` (the raw input ``x``);
- MLP (:mod:`deepscope.nets.mlp`): the pre-activation outputs of three hidden layers
  (``bn{i}`` when there is BatchNorm, else ``fc{i}``) at evenly spaced depths — first,
  middle, last hidden layer;
- MiniAlexNet (:mod:`deepscope.nets.cnn`): three of the pre-activation outputs
  ``features.conv{i}``, ``classifier.fc{i}``, evenly spaced (the default CNN's four
  candidates conv1, conv2, fc1, fc2 give ``features.conv1, classifier.fc1, classifier.fc2``);
- ResNet (:mod:`deepscope.nets.resnet`): the outputs of three stages ``stages.{s}``
  (evenly spaced; with fewer than three stages, of three evenly spaced residual blocks);
- any other model: three evenly spaced ``Linear``/``Conv`` modules, the last (the head)
  excluded.

"Evenly spaced" picks indices ``round(k (n - 1) / 2)``, k = 0, 1, 2, from the ``n``
candidates (halves round up). With fewer than three hidden candidates the output layer (the
logits: ``out``, ``classifier.out``, ``head``) is added as the last candidate (a 2-hidden-layer
MLP gives ``fc1, fc2, out``), and a 1-hidden-layer MLP repeats one (``fc1, out, out``), so
every model of a zoo has the same four layer positions ``l0..l3`` and the same 20 signature
features (position = relative depth). ``layers=`` names modules (or ``"input"``) explicitly instead.

Devices: everything runs on the model's device (or ``device=``). On CUDA in float64 the
margins agree with the CPU to ~1e-14. In float32, TF32 cuDNN convolutions (PyTorch's default
on Ampere and later GPUs) moved conv-net margins by up to ~1e-1 relative for points near the
boundary (1e-6 without TF32), so :func:`margins` runs at IEEE float32 whatever the process's
TF32 / bfloat16 settings (:mod:`deepscope._precision`).

Signature (Sec. 3.2 of the paper): per layer the quartiles ``Q1, Q2 (median), Q3`` of the
normalized margins of the (correctly classified) points, and the fences ``Q1 - 1.5 IQR`` and
``Q3 + 1.5 IQR`` (``IQR = Q3 - Q1``), i.e. 5 features x 4 layers = 20 numbers; quantiles are
``numpy.percentile`` with linear interpolation. The log transform used for the regression is
``log(max(|v|, 1e-12))`` per feature (``|.|`` because the lower fence can be negative; the
floor keeps an exact zero finite).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._device import resolve_device
from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, ModelError, ShapeError
from deepscope.result import Result
from deepscope._precision import ieee_float32

__all__ = ["margins", "MarginResult", "default_margin_layers", "signature_names",
           "log_features", "COLUMNS", "STATS", "EPS", "LOG_FLOOR"]

#: added to the squared gradient norm inside the square root (Jiang et al. 2019)
EPS = 1e-6
#: |v| is floored here before the log of a signature feature
LOG_FLOOR = 1e-12
#: the five per-layer signature statistics, in order
STATS = ("q1", "median", "q3", "lower_fence", "upper_fence")
#: table columns, in order (names never change)
COLUMNS = ("position", "layer", "dim", "nu", "n", "mean", "std", "min", "q1", "median", "q3",
           "max", "lower_fence", "upper_fence", "frac_negative")
INPUT = "input"


# ----------------------------------------------------------------------------- layers

def _spread(candidates: Sequence[str], k: int = 3) -> list[str]:
    """k evenly spaced entries (indices round(j (n-1)/(k-1)), halves up) of ``candidates``."""
    n = len(candidates)
    if n == 0:
        return []
    return [candidates[int(math.floor(j * (n - 1) / (k - 1) + 0.5))] for j in range(k)]


def default_margin_layers(model: nn.Module) -> list[str]:
    """The four default layers of ``model`` (see the module docstring): input + 3 hidden."""
    from deepscope.nets.cnn import MiniAlexNet
    from deepscope.nets.mlp import MLP
    from deepscope.nets.resnet import ResNet

    names = dict(model.named_modules())
    if isinstance(model, MLP):
        cand = []
        i = 1
        while f"fc{i}" in names:
            cand.append(f"bn{i}" if f"bn{i}" in names else f"fc{i}")
            i += 1
        head = "out"
    elif isinstance(model, MiniAlexNet):
        cand = [n for n in names if n.startswith("features.conv")]
        cand += [n for n in names if n.startswith("classifier.fc")]
        head = "classifier.out"
    elif isinstance(model, ResNet):
        cand = [f"stages.{s}" for s in range(len(model.stages))]
        if len(cand) < 3:
            cand = [f"stages.{s}.{b}" for s in range(len(model.stages))
                    for b in range(len(model.stages[s]))]
        head = "head"
    else:
        lin = [n for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        if not lin:
            raise ModelError(f"{type(model).__name__}: no Linear/Conv layer to measure "
                             f"margins at; pass layers=[...] (module names or 'input')")
        cand, head = lin[:-1], lin[-1]
    if len(cand) < 3:
        cand = [*cand, head]
    return [INPUT, *_spread(cand, 3)]


def _resolve_layers(model: nn.Module, layers) -> list[str]:
    if layers is None:
        return default_margin_layers(model)
    if isinstance(layers, str):
        layers = [t.strip() for t in layers.split(",") if t.strip()]
    layers = list(layers)
    if not layers:
        raise ConfigError("layers: expected at least one module name (or 'input'), got none")
    names = {n for n, _ in model.named_modules() if n}
    for name in layers:
        if not isinstance(name, str):
            raise ConfigError(f"layers: expected module names, got {name!r}")
        if name != INPUT and name not in names:
            shown = sorted(names)
            more = "" if len(shown) <= 30 else f", ... ({len(shown)} modules)"
            raise ConfigError(f"unknown layer {name!r}: expected 'input' or one of "
                              f"{', '.join(shown[:30])}{more}")
    return layers


def signature_names(n_layers: int = 4, *, log: bool = False) -> list[str]:
    """Feature names ``l{k}_{stat}`` (``log_l{k}_{stat}`` for the log transform)."""
    pre = "log_" if log else ""
    return [f"{pre}l{k}_{s}" for k in range(n_layers) for s in STATS]


def log_features(values) -> np.ndarray:
    """The signature's log transform ``log(max(|v|, 1e-12))`` (NaN stays NaN)."""
    v = np.asarray(values, dtype=float)
    return np.log(np.maximum(np.abs(v), LOG_FLOOR))


def _stats(m: np.ndarray) -> dict[str, float]:
    if m.size == 0:
        nan = float("nan")
        return {k: nan for k in ("mean", "std", "min", "q1", "median", "q3", "max",
                                 "lower_fence", "upper_fence", "frac_negative")}
    q1, med, q3 = np.percentile(m, [25.0, 50.0, 75.0])
    iqr = q3 - q1
    return {"mean": float(m.mean()), "std": float(m.std()), "min": float(m.min()),
            "q1": float(q1), "median": float(med), "q3": float(q3), "max": float(m.max()),
            "lower_fence": float(q1 - 1.5 * iqr), "upper_fence": float(q3 + 1.5 * iqr),
            "frac_negative": float((m < 0).mean())}


# ----------------------------------------------------------------------------- result

@dataclass(repr=False)
class MarginResult(Result):
    """:class:`~deepscope.result.Result` of :func:`margins` plus the per-sample margins.

    Attributes:
        margins: ``{layer: normalized margins d̂_l}`` (float64, one per used point).
        raw_margins: ``{layer: d_l}`` before dividing by ``ν_l``.
        nu: ``{layer: ν_l}``.
        indices: the indices (into the split) of the points used.
        layers: the layer names in position order (``l0``, ``l1``, ...).
    """

    margins: dict[str, np.ndarray] = field(default_factory=dict)
    raw_margins: dict[str, np.ndarray] = field(default_factory=dict)
    nu: dict[str, float] = field(default_factory=dict)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    layers: list[str] = field(default_factory=list)

    def signature(self, log: bool = False) -> pd.Series:
        """The margin signature: Q1, median, Q3, lower and upper fence per layer.

        ``log=True`` gives ``log(max(|v|, 1e-12))`` of each feature, named ``log_l{k}_*``.
        """
        t = self.table.set_index("position")
        vals = [float(t.loc[k, s]) for k in range(len(self.layers)) for s in STATS]
        if log:
            return pd.Series(log_features(vals), index=signature_names(len(self.layers),
                                                                        log=True))
        return pd.Series(vals, index=signature_names(len(self.layers)))


# ----------------------------------------------------------------------------- data

def _split_data(data, split: str, ckpt_data):
    """-> (x, y) to measure margins on, (x, y) of the training set for ν."""
    from deepscope.data.dataset import Dataset
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if data is None:
        data = ckpt_data
    if isinstance(data, Dataset):
        if data.task != "classification":
            raise ConfigError(f"margins need a classification dataset, got task "
                              f"{data.task!r} ({data.name})")
        return data.split(split), data.split("train")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(t) for t in data)
        return (x, y), (x, y)
    raise ConfigError(f"data must be a deepscope Dataset or an (x, y) tuple, got "
                      f"{type(data).__name__}")


def _check_xy(x: Tensor, y: Tensor, where: str) -> None:
    if y.dim() != 1 or y.is_floating_point():
        raise ShapeError(f"{where}: margins need integer class labels of shape (n,), got "
                         f"{tuple(y.shape)} {y.dtype}")
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"{where}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ShapeError(f"{where}: expected at least one sample, got 0")


# ----------------------------------------------------------------------------- capture

class _Capture:
    """Forward hooks recording each named layer's output (once per forward)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.outputs: dict[str, Tensor] = {}
        self.handles = []
        modules = dict(model.named_modules())
        for name in dict.fromkeys(layers):
            if name == INPUT:
                continue
            self.handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args, output):
            if not isinstance(output, Tensor):
                raise ModelError(f"layer {name!r} ({type(module).__name__}) returns "
                                 f"{type(output).__name__}, expected a tensor")
            if name in self.outputs:
                raise ModelError(f"layer {name!r} runs more than once per forward pass; "
                                 f"choose another layer")
            self.outputs[name] = output
            # The rest of the network runs on a copy: an in-place op downstream (e.g.
            # nn.ReLU(inplace=True) right after a captured Linear/BatchNorm) would otherwise
            # overwrite the captured h_l, giving ν and ∇_{h_l} of the post-activation.
            return output.clone()
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _forward(net: nn.Module, cap: _Capture, layers: Sequence[str], x: Tensor
             ) -> tuple[Tensor, list[Tensor]]:
    cap.outputs = {}
    logits = net(x)
    missing = [n for n in layers if n != INPUT and n not in cap.outputs]
    if missing:
        raise ModelError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    hs = [x if n == INPUT else cap.outputs[n] for n in layers]
    return logits, hs


def _total_variation(net, cap, layers, x, y, batch_size, device, dtype, enabled) -> list[float]:
    """ν_l = sqrt(tr Cov(h_l)) over all of (x, y), streamed (Chan et al. merge, float64)."""
    n_tot = 0
    means: list[Tensor | None] = [None] * len(layers)
    m2: list[Tensor | None] = [None] * len(layers)
    with torch.no_grad():
        for i in progress_bar(range(0, x.shape[0], batch_size), enabled=enabled,
                              desc="margins: layer variation", unit="batch"):
            xb = x[i:i + batch_size].to(device=device, dtype=dtype)
            _, hs = _forward(net, cap, layers, xb)
            nb = xb.shape[0]
            for k, h in enumerate(hs):
                h = h.detach().reshape(nb, -1).double()
                mb = h.mean(0)
                sb = ((h - mb) ** 2).sum(0)
                if means[k] is None:
                    means[k], m2[k] = mb, sb
                else:
                    delta = mb - means[k]
                    n_new = n_tot + nb
                    m2[k] = m2[k] + sb + delta ** 2 * (n_tot * nb / n_new)
                    means[k] = means[k] + delta * (nb / n_new)
            n_tot += nb
    if n_tot < 2:
        raise ShapeError(f"ν_l needs at least 2 training points, got {n_tot}")
    return [math.sqrt(float(s.sum()) / (n_tot - 1)) for s in m2]


# ----------------------------------------------------------------------------- main

@ieee_float32
def margins(model, data=None, layers: Sequence[str] | str | None = None, *,
            split: str = "train", batch_size: int = 512, correct_only: bool = True,
            device=None, progress: bool = True) -> MarginResult:
    """Normalized margin distributions at four layers (Jiang et al., ICLR 2019).

    Args:
        model: a classifier ``nn.Module`` (logits out), or the path of a deepscope checkpoint
            (then ``data`` defaults to the checkpoint's dataset).
        data: a deepscope ``Dataset`` (margins on ``split``, ``ν_l`` on its train split) or
            an ``(x, y)`` tuple (both on the tuple).
        layers: module names (``"input"`` for the input); default
            :func:`default_margin_layers`.
        split: ``"train"`` (the paper) or ``"test"``.
        batch_size: points per forward/backward pass.
        correct_only: keep only correctly classified points (the paper); otherwise every
            point, misclassified ones with negative margins.
        device: default the model's.
        progress: progress bars.

    Returns:
        :class:`MarginResult`; ``table`` has one row per layer (``COLUMNS``), ``summary`` the
        point counts, accuracy and the 20-feature ``signature`` (``l{k}_{stat}``).
    """
    ckpt_data = None
    if isinstance(model, (str, Path)):
        from deepscope.train.checkpoint import load_checkpoint
        ckpt = load_checkpoint(model)
        model = ckpt.model
        if data is None:
            ckpt_data = ckpt.dataset()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module or a checkpoint path, got "
                          f"{type(model).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    (x, y), (x_tr, y_tr) = _split_data(data, split, ckpt_data)
    _check_xy(x, y, split)
    _check_xy(x_tr, y_tr, "train")
    layer_names = _resolve_layers(model, layers)

    params = list(model.parameters())
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # every point would silently count as misclassified (NaN logits)
        raise ModelError(f"the model has non-finite (NaN/inf) parameters in "
                         f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}: expected "
                         "finite weights")
    batch_bn = [n for n, m in model.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None]
    if batch_bn:  # eval mode still normalizes by the batch: samples are not independent
        raise ModelError(f"BatchNorm {', '.join(batch_bn[:3])} keeps no running statistics "
                         f"(track_running_stats=False), so its outputs depend on the batch; "
                         f"margins need per-sample outputs (expected eval-mode statistics)")
    device = resolve_device(device, params[0].device if params else None)
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)

    net = copy.deepcopy(model).to(device)  # private copy: hooks and eval() never reach `model`
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cap = _Capture(net, layer_names)
    try:
        nus = _total_variation(net, cap, layer_names, x_tr, y_tr, batch_size, device, dtype,
                               progress)
        raw = [[] for _ in layer_names]
        dims = [0] * len(layer_names)
        keep_idx, n_correct = [], 0
        n = x.shape[0]
        for i in progress_bar(range(0, n, batch_size), enabled=progress,
                              desc="margins", unit="batch"):
            xb = x[i:i + batch_size].to(device=device, dtype=dtype).requires_grad_(True)
            yb = y[i:i + batch_size].to(device)
            with torch.enable_grad():
                logits, hs = _forward(net, cap, layer_names, xb)
                if logits.dim() != 2:
                    raise ShapeError(f"margins need logits of shape (batch, classes), got "
                                     f"{tuple(logits.shape)}")
                k = logits.shape[1]
                if k < 2:
                    raise ShapeError(f"margins need a classifier with at least 2 logits "
                                     f"(f_i - f_j over classes), got {k} output(s)")
                if int(yb.max()) >= k or int(yb.min()) < 0:
                    raise ShapeError(f"labels must lie in [0, {k}) for {k} logits; got "
                                     f"[{int(yb.min())}, {int(yb.max())}]")
                with torch.no_grad():
                    other = logits.detach().clone()
                    other.scatter_(1, yb[:, None], float("-inf"))
                    j = other.argmax(1)  # highest other logit (= predicted when wrong)
                diff = logits.gather(1, yb[:, None])[:, 0] - logits.gather(1, j[:, None])[:, 0]
                grads = torch.autograd.grad(diff.sum(), hs, allow_unused=True)
            nb = xb.shape[0]
            correct = diff.detach() > 0
            n_correct += int(correct.sum())
            sel = correct if correct_only else torch.ones_like(correct)
            keep_idx.append(torch.arange(i, i + nb)[sel.cpu()])
            for l, (h, g) in enumerate(zip(hs, grads)):
                dims[l] = h[0].numel()
                sq = (torch.zeros(nb, device=device, dtype=torch.float64) if g is None
                      else g.reshape(nb, -1).double().pow(2).sum(1))
                d = diff.detach().double() / torch.sqrt(sq + EPS)
                raw[l].append(d[sel].cpu().numpy())
    finally:
        cap.close()

    indices = (torch.cat(keep_idx).numpy() if keep_idx else np.zeros(0, dtype=np.int64))
    rows, m_norm, m_raw, nu_map = [], {}, {}, {}
    for l, name in enumerate(layer_names):
        r = np.concatenate(raw[l]) if raw[l] else np.zeros(0)
        nu = nus[l]
        m = r / nu if nu > 0 else np.full_like(r, np.nan)
        key = name if name not in m_norm else f"{name}#{l}"
        m_norm[key], m_raw[key], nu_map[key] = m, r, nu
        rows.append({"position": l, "layer": name, "dim": dims[l], "nu": nu,
                     "n": int(m.size), **_stats(m)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    res = MarginResult("margins", table, settings={
        "layers": list(layer_names), "layers_given": layers is not None, "split": split,
        "batch_size": batch_size, "correct_only": correct_only, "eps": EPS,
        "device": str(device)}, margins=m_norm, raw_margins=m_raw, nu=nu_map,
        indices=indices, layers=list(layer_names))
    sig = res.signature()
    res.summary = {"n_points": int(x.shape[0]), "n_correct": n_correct,
                   "n_used": int(indices.size), "accuracy": n_correct / int(x.shape[0]),
                   "layers": list(layer_names),
                   "signature": {k: float(v) for k, v in sig.items()}}
    return res
