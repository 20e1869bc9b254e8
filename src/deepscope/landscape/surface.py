"""``deepscope.surface``: 1-D lines and 2-D planes of the loss around a trained model.

The loss is evaluated on a grid ``L(theta + a*d1 + b*d2)`` (Li, Xu, Taylor, Studer &
Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018; Goodfellow, Vinyals &
Saxe 2015 for 1-D lines) along filter-normalized Gaussian directions, the top-2 PCA
directions of a training trajectory, or directions the user gives
(:mod:`deepscope.landscape.directions`).

Evaluation. The cost floor is one forward pass over the evaluation data per grid point. Grid
points are evaluated ``points_per_batch`` at a time: the parameter sets ``theta + a_k d1 +
b_k d2`` are stacked and one :func:`torch.func.vmap` over
:func:`torch.func.functional_call` runs them together (one call, one host synchronisation per
chunk of points and data batch). Where vmap cannot run the model (an operator without a
batching rule, e.g. recurrent layers; data-dependent Python control flow) the surface falls
back to evaluating point by point on a private copy of the model
(:class:`deepscope.landscape.evaluate.PointEvaluator`) and says why in
``summary["fallback_reason"]``.

First-layer shortcut: when the first parameterized layer is a Linear or convolution applied
to the raw input (after parameter-free reshapes), its output at ``theta + a d1 + b d2`` is
``Z_0 + a Z_1 + b Z_2`` exactly (the layer is linear in its weight and bias), so its three
products are computed once per data batch instead of once per grid point
(``summary["first_layer_shortcut"]`` names the layer). It pays where the layer's fan-in is
large (e.g. 784 or 3072 flattened pixels); with ``first_layer="auto"`` it is used from a fan-in
of 256 on (reading three precomputed outputs costs about as much as a 64-input product).

Engines (``engine``). ``"vmap"`` as above. ``"loop"``: one point at a time on a private copy
whose parameters are views into one flat buffer, so each point costs one ``addmv`` (theta +
c @ D) and one plain forward. ``"sequential"``: :class:`PointEvaluator` (also the fallback).
``"auto"`` (default) takes vmap on GPUs and the loop on CPUs: there both do the same forward
FLOPs per point, and vmap multiplies the activation memory by ``points_per_batch`` (measured
about 2x slower per point on a digits MLP with 1797 samples, benchmarks/
surface_vs_loss_landscapes.py).

The model is evaluated in eval mode (dropout off). BatchNorm (``bn``):

- ``"keep"`` (default): the model's own running statistics at every grid point, as Li et al.
  did (their evaluation calls ``net.eval()``; their directions leave BatchNorm parameters
  unchanged). Runs under vmap.
- ``"recompute"``: re-estimate the running statistics at every grid point from the training
  inputs (cumulative average over the training split, or its ``max_samples`` subset), as for
  interpolation curves (Frankle et al. 2020). Sequential: updating running statistics is a
  side effect vmap cannot batch.

Resume. With ``resume=PATH`` every finished chunk of grid points is added to a JSON file
(written atomically, :func:`deepscope._io.atomic_write`); a rerun with the same settings
computes only the missing points. A file written for other settings (grid, directions, seed,
data, loss, model weights, ...) is refused with a :class:`ConfigError` naming the differences.

The user's model is never modified: everything runs on a deep copy.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepscope._io import atomic_write
from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, DeepscopeError, ModelError, ShapeError, unknown_name
from deepscope.landscape.directions import (as_direction, direction_dot,
                                            direction_norm, directions_fingerprint,
                                            filter_normalized_directions, pca_directions)
from deepscope.landscape.evaluate import PointEvaluator, has_batchnorm, split_data
from deepscope.landscape.result_surface import COLUMNS, SurfaceResult
from deepscope.train.evaluate import (_check_output, _mse, check_loss_fits, default_loss,
                                      model_device_dtype)

__all__ = ["surface", "DIRECTION_KINDS", "BN_MODES", "ENGINES", "RESUME_FORMAT"]

DIRECTION_KINDS = ("filter-normalized", "pca-trajectory")
BN_MODES = ("keep", "recompute")
ENGINES = ("auto", "vmap", "loop", "sequential")
RESUME_FORMAT = "deepscope-surface-resume/1"
_MEMORY_BUDGET = 256 * 2 ** 20  # bytes of stacked parameters + activations per chunk


# ---------------------------------------------------------------------------- arguments
def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _steps(steps, dims: int) -> list[int]:
    if isinstance(steps, (list, tuple)):
        if len(steps) != dims:
            raise ConfigError(f"steps: expected one integer or {dims} integers for a "
                              f"{dims}-D surface, got {steps!r}")
        return [_check_int("steps", s, 2) for s in steps]
    return [_check_int("steps", steps, 2)] * dims


def _ranges(span, dims: int) -> list[tuple[float, float]]:
    """number s -> [-s, s] per axis; (lo, hi) -> that range per axis; ((lo, hi), ...) each."""
    def one(r) -> tuple[float, float]:
        if _is_num(r):
            if not (math.isfinite(float(r)) and float(r) > 0):
                raise ConfigError(f"span must be a finite number > 0, got {r!r}")
            return -float(r), float(r)
        if (isinstance(r, (list, tuple)) and len(r) == 2 and all(map(_is_num, r))
                and math.isfinite(float(r[0])) and math.isfinite(float(r[1]))
                and float(r[0]) < float(r[1])):
            return float(r[0]), float(r[1])
        raise ConfigError(f"span: expected a number s > 0 (range [-s, s]), a (low, high) pair "
                          f"with low < high, or one such per axis; got {span!r}")
    if isinstance(span, (list, tuple)) and len(span) == dims and all(
            isinstance(r, (list, tuple)) for r in span):
        return [one(r) for r in span]
    return [one(span)] * dims


def _subset(x: Tensor, y: Tensor, max_samples: int | None, seed: int, tag: int
            ) -> tuple[Tensor, Tensor]:
    if max_samples is not None and max_samples < x.shape[0]:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + tag)
        idx = torch.randperm(x.shape[0], generator=g)[:max_samples].sort().values
        return x[idx], y[idx]
    return x, y


def _hash_tensors(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        d = t.detach().cpu().contiguous()
        h.update(str(d.dtype).encode() + str(tuple(d.shape)).encode())
        h.update(d.view(-1).view(torch.uint8).numpy().tobytes() if d.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------- engines
_AFFINE_FIRST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PLANE_BUDGET = 512 * 2 ** 20  # bytes of precomputed first-layer outputs
#: ``first_layer="auto"`` uses the shortcut from this fan-in (multiply-adds per output entry)
#: on: below it, reading 1 + dims precomputed outputs costs about as much as the product
#: (measured on CPUs: a 64-input Linear and a 25-tap convolution got slower with it)
SHORTCUT_MIN_FAN_IN = 256
FIRST_LAYER_MODES = ("auto", True, False)


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    return int(module.in_channels // module.groups * math.prod(module.kernel_size))


class _Captured(Exception):
    pass


def _first_affine_layer(net: nn.Module, x: Tensor, base: dict[str, Tensor]) -> str | None:
    """Name of the first parameterized module run by ``net`` when it is a Linear / Conv layer,
    called once per forward, with parameters of its own (not tied elsewhere), on an input that
    does not depend on any parameter (checked by a second dry run at perturbed parameters)."""
    owners: dict[int, list[str]] = {}
    for mname, m in net.named_modules():
        for _, prm in m.named_parameters(recurse=False):
            owners.setdefault(id(prm), []).append(mname)
    calls: list[tuple[str, Tensor]] = []

    def pre(name):
        def hook(_m, args):
            calls.append((name, args[0] if args and isinstance(args[0], Tensor) else None))
        return hook

    handles = [m.register_forward_pre_hook(pre(n)) for n, m in net.named_modules()
               if any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            net(x)
            first_run = list(calls)
            calls.clear()
            g = torch.Generator().manual_seed(12345)
            moved = {n: p + torch.randn(p.shape, generator=g).to(p.device, p.dtype)
                     for n, p in base.items()}
            torch.func.functional_call(net, moved, (x,), strict=False)
            second_run = list(calls)
    except Exception:  # noqa: BLE001 - any trouble: no shortcut, the plain path decides
        return None
    finally:
        for h in handles:
            h.remove()
    if not first_run or first_run[0][1] is None or not second_run:
        return None
    name, inp = first_run[0]
    module = net.get_submodule(name)
    if not isinstance(module, _AFFINE_FIRST) or sum(c[0] == name for c in first_run) != 1:
        return None
    if any(len(owners[id(p)]) != 1 for p in module.parameters(recurse=False)):
        return None
    if second_run[0][0] != name or second_run[0][1] is None or not torch.equal(
            second_run[0][1], inp):
        return None
    return name


class _FirstLayerPlane(nn.Module):
    """Stands in for the first (affine) layer on a grid: for parameters ``theta + sum_j c_j d_j``
    its output is ``Z_0 + sum_j c_j Z_j`` with ``Z_0 = f(x; theta_layer)`` and
    ``Z_j = f(x; d_j,layer)`` computed once per data batch (exact: Linear and convolution
    layers are linear in their weight and bias jointly). ``coef`` is the grid point."""

    def __init__(self, zs: list[list[Tensor]], dims: int, dtype, device):
        super().__init__()
        self.register_buffer("coef", torch.zeros(dims, dtype=dtype, device=device))
        self.zs = zs
        self.batch = 0

    def forward(self, inp: Tensor) -> Tensor:
        z = self.zs[self.batch]
        if inp.shape[0] != z[0].shape[0]:
            raise RuntimeError("first-layer plane: batch does not match the precomputed one")
        out = z[0]
        for j in range(1, len(z)):
            out = out + self.coef[j - 1] * z[j]
        return out


class _VmapEngine:
    """Loss sums and correct counts of K stacked parameter sets per call (torch.func.vmap);
    with ``batched=False`` the same functional evaluation one parameter set at a time.

    When the first parameterized layer is a Linear / convolution applied to the raw input
    (:func:`_first_affine_layer`), its outputs along the grid are ``Z_0 + a Z_1 + b Z_2``
    (:class:`_FirstLayerPlane`): three products per data batch replace one per grid point.
    """

    def __init__(self, net: nn.Module, base: dict[str, Tensor], dirs: list[dict[str, Tensor]],
                 buffers: dict[str, Tensor], x: Tensor, y: Tensor, loss: str, batch_size: int,
                 batched: bool = True, first_layer: bool | str = "auto"):
        self.batched = batched
        self.base, self.dirs, self.buffers = base, dirs, dict(buffers)
        self.x, self.y, self.loss, self.batch_size = x, y, loss, batch_size
        self.classify = not y.is_floating_point()
        self.plane: _FirstLayerPlane | None = None
        self.first_layer = None
        self.net = net
        if first_layer:
            self._setup_first_layer(net, x, first_layer)
        self.skip = set()
        if self.first_layer is not None:
            mod = net.get_submodule(self.first_layer)
            self.skip = {f"{self.first_layer}.{n}" for n, _ in mod.named_parameters()}
        # flat layout: theta(c) = base + c @ D for all moved parameters in one addmm
        self.layout: list[tuple[str, tuple[int, ...], int, int]] = []
        off = 0
        for name, p in base.items():
            if name not in self.skip:
                self.layout.append((name, tuple(p.shape), off, p.numel()))
                off += p.numel()
        names = [n for n, *_ in self.layout]
        ref = next(iter(base.values()))
        self.flat_base = torch.cat([base[n].reshape(-1) for n in names]) if names \
            else torch.zeros(0, dtype=ref.dtype, device=ref.device)
        self.flat_dirs = torch.stack([torch.cat([d[n].reshape(-1) for n in names])
                                      if names else self.flat_base for d in dirs])

        def stats(params, xb, yb):
            out = torch.func.functional_call(self.net, {**params, **self.buffers}, (xb,))
            return self._from_output(out, yb)

        self._stats = stats
        self._vstats = torch.func.vmap(stats, in_dims=(0, None, None), randomness="error")
        if not batched:
            # one point at a time: the parameters of a private copy are views into one flat
            # buffer, so theta + sum_j c_j d_j is written by one addmv and the copy is called
            # directly (no per-point functional_call or per-tensor updates)
            self._loop_net = copy.deepcopy(self.net)
            named = dict(self._loop_net.named_parameters())
            self._flat = torch.empty_like(self.flat_base)
            for name, shape, off, n in self.layout:
                named[name].data = self._flat[off:off + n].view(shape)
            self._loop_plane = (self._loop_net.get_submodule(self.first_layer)
                                if self.first_layer is not None else None)

    def _from_output(self, out: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Summed loss and number of correct argmax predictions of one batch."""
        if self.loss == "cross_entropy":
            total = F.cross_entropy(out, yb, reduction="sum")
        else:
            total = _mse(out, yb) * out.numel()
        if self.classify:
            correct = (out.argmax(dim=-1) == yb).sum()
        else:
            correct = torch.zeros((), dtype=torch.int64, device=out.device)
        return total, correct

    def _setup_first_layer(self, net: nn.Module, x: Tensor, mode) -> None:
        name = _first_affine_layer(net, x[:2], self.base)
        if name is None:
            return
        mod = net.get_submodule(name)
        if mode == "auto" and _fan_in(mod) < SHORTCUT_MIN_FAN_IN:
            return
        with torch.no_grad():
            out1 = mod(self._first_input(net, mod, x[:1]))
        batches = math.ceil(x.shape[0] / self.batch_size)
        need = (1 + len(self.dirs)) * out1.numel() * x.shape[0] * out1.element_size()
        if need > _PLANE_BUDGET or batches < 1:
            return
        zs = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                inp = self._first_input(net, mod, x[i:i + self.batch_size])
                z = [mod(inp)]
                for d in self.dirs:
                    own = {n: d[f"{name}.{n}"] for n, _ in mod.named_parameters()}
                    z.append(torch.func.functional_call(mod, own, (inp,)))
                zs.append(z)
        fast = copy.deepcopy(net)
        parent_name, _, child = name.rpartition(".")
        parent = fast.get_submodule(parent_name) if parent_name else fast
        self.plane = _FirstLayerPlane(zs, len(self.dirs), out1.dtype, out1.device)
        setattr(parent, child, self.plane)
        self.net = fast
        self.first_layer = name
        self.buffers = {n: b for n, b in fast.named_buffers() if not n.endswith(f"{name}.coef")
                        and n != f"{name}.coef"}

    @staticmethod
    def _first_input(net: nn.Module, mod: nn.Module, xb: Tensor) -> Tensor:
        got = []

        def hook(_m, args):
            got.append(args[0])
            raise _Captured

        h = mod.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                net(xb)
        except _Captured:
            pass
        finally:
            h.remove()
        return got[0]

    def stacked(self, coords: Tensor) -> dict[str, Tensor]:
        """``{name: (K, *shape)}`` parameters ``theta + sum_j coords[:, j] d_j``."""
        k = coords.shape[0]
        flat = torch.addmm(self.flat_base.unsqueeze(0), coords.to(self.flat_base.dtype),
                           self.flat_dirs)
        out = {name: flat[:, off:off + n].view(k, *shape)
               for name, shape, off, n in self.layout}
        if self.first_layer is not None:
            out[f"{self.first_layer}.coef"] = coords.to(self.plane.coef.dtype)
        return out

    def __call__(self, coords: Tensor, denom: int) -> tuple[np.ndarray, np.ndarray]:
        k = coords.shape[0]
        total = torch.zeros(k, dtype=torch.float64, device=self.x.device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.x.device)
        bs = self.batch_size
        with torch.no_grad():
            if self.batched:
                params = self.stacked(coords)
                for b, i in enumerate(range(0, self.x.shape[0], bs)):
                    if self.plane is not None:
                        self.plane.batch = b
                    t, c = self._vstats(params, self.x[i:i + bs], self.y[i:i + bs])
                    total += t.double()
                    correct += c
            else:
                ts, cs = [], []
                cdir = coords.to(self.flat_base.dtype)
                net, plane = self._loop_net, self._loop_plane
                for p in range(k):
                    torch.addmv(self.flat_base, self.flat_dirs.T, cdir[p], out=self._flat)
                    if plane is not None:
                        plane.coef.copy_(cdir[p])
                    tp, cp = 0.0, 0
                    for b, i in enumerate(range(0, self.x.shape[0], bs)):
                        if plane is not None:
                            plane.batch = b
                        t, c = self._from_output(net(self.x[i:i + bs]), self.y[i:i + bs])
                        tp, cp = tp + t.double(), cp + c
                    ts.append(tp)
                    cs.append(cp)
                total += torch.stack(ts)
                correct += torch.stack(cs)
        n = self.x.shape[0]
        loss = (total / denom).cpu().numpy()
        acc = (correct.double() / n).cpu().numpy() if self.classify else np.full(k, np.nan)
        return loss, acc


class _SequentialEngine:
    """One point at a time on a private copy (PointEvaluator; BatchNorm per ``bn``)."""

    def __init__(self, model: nn.Module, evaluator: PointEvaluator, base: dict[str, Tensor],
                 dirs: list[dict[str, Tensor]]):
        self.ev = evaluator
        self.base = evaluator.vector(base)
        self.dirs = [evaluator.vector(d) for d in dirs]

    def __call__(self, coords: Tensor, denom: int) -> tuple[np.ndarray, np.ndarray]:
        losses, accs = [], []
        for row in coords:
            theta = self.base.clone()
            for j, d in enumerate(self.dirs):
                theta = theta + row[j].to(theta.dtype) * d
            r = self.ev.evaluate(theta, "eval")
            losses.append(r["eval_loss"])
            accs.append(r["eval_accuracy"])
        return np.asarray(losses, dtype=float), np.asarray(accs, dtype=float)


def _activation_numel(net: nn.Module, x1: Tensor) -> tuple[Tensor, int]:
    """Output of ``net`` on one example and the summed output sizes of its leaf modules."""
    sizes = []

    def hook(_m, _inp, out):
        if isinstance(out, Tensor):
            sizes.append(out.numel())

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            out = net(x1)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor):
        raise ModelError(f"expected the model to return a tensor, got {type(out).__name__}")
    return out, int(sum(sizes)) + int(x1[0].numel())


# ---------------------------------------------------------------------------- resume file
def _read_resume(path: Path, key: dict) -> dict[int, tuple[float, float]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"resume file {path}: not a readable surface resume file ({exc}); "
                          f"remove it or pass another path") from None
    if not isinstance(data, dict) or data.get("format") != RESUME_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"resume file {path}: expected format {RESUME_FORMAT!r}, got "
                          f"{got!r}; remove it or pass another path")
    saved = data.get("settings", {})
    diffs = [f"{k}: file has {saved.get(k)!r}, this run {v!r}" for k, v in key.items()
             if saved.get(k) != v]
    if diffs:
        raise ConfigError(f"resume file {path} was written for different settings ("
                          + "; ".join(diffs) + "); use another resume path or delete it")
    try:
        return {int(i): (float(l), float(a)) for i, l, a in data.get("points", [])}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"resume file {path}: malformed points ({exc})") from None


def _write_resume(path: Path, key: dict, done: dict[int, tuple[float, float]]) -> None:
    data = {"format": RESUME_FORMAT, "settings": key,
            "points": [[i, l, a] for i, (l, a) in sorted(done.items())]}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data))


# ---------------------------------------------------------------------------- directions
def _resolve_directions(directions, model: nn.Module, base: dict[str, Tensor], dims: int, *,
                        trajectory, seed: int, include_bias: bool, include_bn: bool
                        ) -> tuple[str, list[dict[str, Tensor]], dict]:
    info: dict = {}
    if isinstance(directions, str):
        if directions not in DIRECTION_KINDS:
            raise unknown_name("directions", directions, DIRECTION_KINDS)
        if directions == "filter-normalized":
            if trajectory is not None:
                raise ConfigError("trajectory is only used with directions='pca-trajectory'")
            dirs = filter_normalized_directions(model, dims, seed=seed,
                                                include_bias=include_bias,
                                                include_bn=include_bn)
            return directions, [{k: v.to(base[k].device, base[k].dtype) for k, v in d.items()}
                                for d in dirs], info
        if trajectory is None:
            raise ConfigError("directions='pca-trajectory' needs trajectory=[...] (models, "
                              "parameter dicts or checkpoint paths along training)")
        pca = pca_directions(trajectory, model, dims)
        info = {"explained_variance": pca.explained_variance,
                "explained_variance_ratio": pca.explained_variance_ratio,
                "trajectory_coords": pca.coords}
        return directions, pca.directions, info
    if isinstance(directions, (Tensor, Mapping)):
        directions = [directions]
    if not isinstance(directions, (list, tuple)) or len(directions) != dims:
        got = (f"{len(directions)} direction(s)" if isinstance(directions, (list, tuple))
               else type(directions).__name__)
        raise ConfigError(f"directions: expected 'filter-normalized', 'pca-trajectory' or "
                          f"{dims} direction(s) (flat tensors or {{name: tensor}} dicts) for a "
                          f"{dims}-D surface, got {got}")
    dirs = [as_direction(d, base, f"directions[{k}]") for k, d in enumerate(directions)]
    if trajectory is not None:
        raise ConfigError("trajectory is only used with directions='pca-trajectory'")
    return "user", dirs, info


def _pca_span(coords: list[list[float]], dims: int) -> list[tuple[float, float]]:
    c = np.asarray(coords, dtype=float).reshape(-1, dims)
    c = np.vstack([c, np.zeros((1, dims))])
    out = []
    for j in range(dims):
        lo, hi = float(c[:, j].min()), float(c[:, j].max())
        pad = 0.2 * max(hi - lo, 1e-12)
        out.append((lo - pad, hi + pad))
    return out


# ---------------------------------------------------------------------------- surface
def surface(model: nn.Module, data, dims: int = 2, steps: int | Sequence[int] = 25,
            span=None, directions="filter-normalized", *, trajectory: Sequence | None = None,
            split: str = "train", loss: str | None = None, batch_size: int = 4096,
            max_samples: int | None = None, points_per_batch: int | None = None,
            bn: str = "keep", include_bias: bool = False, include_bn: bool = False,
            resume: str | Path | None = None, seed: int = 0, device=None,
            engine: str = "auto", first_layer: bool | str = "auto", progress: bool = True,
            callback: Callable[[int, int], None] | None = None) -> SurfaceResult:
    """Loss and accuracy on a 1-D line or 2-D plane through ``model``'s parameters.

    Args:
        model: the center ``theta`` (an ``nn.Module``; never modified).
        data: a deepscope ``Dataset``, an ``(x, y)`` pair (the ``"train"`` split) or a dict
            ``{split: (x, y)}``.
        dims: 1 (line ``theta + a*d1``) or 2 (plane ``theta + a*d1 + b*d2``).
        steps: grid points per axis (an integer or one per axis), at least 2.
        span: a number ``s`` (each axis from ``-s`` to ``s``), a ``(low, high)`` pair, or one
            pair per axis. Default: 1.0 for filter-normalized / user directions; for
            pca-trajectory the projected trajectory plus a 20% margin.
        directions: ``"filter-normalized"`` (seeded Gaussian, Li et al. 2018),
            ``"pca-trajectory"`` (needs ``trajectory``) or ``dims`` user directions (flat
            vectors or ``{name: tensor}`` dicts, used as given).
        trajectory: models / parameter dicts / checkpoint paths along training
            (pca-trajectory).
        split: which split of ``data`` to evaluate on.
        loss: ``"cross_entropy"``, ``"mse"`` or None (by task / target dtype).
        batch_size: samples per forward pass.
        max_samples: evaluate on a seeded random subset of this many samples.
        points_per_batch: grid points per vmapped call, and per resume-file write (None:
            from a memory budget: 256 MiB on CPUs, a quarter of the free memory up to 4 GiB
            on GPUs).
        bn: ``"keep"`` or ``"recompute"`` (module docstring); ignored without BatchNorm.
        include_bias, include_bn: filter-normalized directions also move 1-D / BatchNorm
            parameters (zero by default, as Li et al.).
        resume: a JSON file that keeps finished grid points (module docstring).
        seed: seeds the directions and the ``max_samples`` subset.
        device: where to compute (None: the model's device).
        engine: ``"auto"`` (vmap on GPUs, loop on CPUs, sequential where they cannot run),
            ``"vmap"``, ``"loop"`` or ``"sequential"`` (module docstring).
        first_layer: evaluate a first Linear / convolution layer on the raw input as
            ``Z_0 + a Z_1 + b Z_2`` (exact up to rounding; three products per data batch
            instead of one per grid point): ``"auto"`` when its fan-in is at least
            ``SHORTCUT_MIN_FAN_IN`` (256), True whenever it applies, False never.
        progress: a progress bar over grid points.
        callback: called as ``callback(points_done, points_total)`` after every chunk (after
            the resume file is written); an exception it raises stops the run.

    Returns:
        :class:`SurfaceResult` (columns ``i, j, a, b, loss, accuracy``; see
        :mod:`deepscope.landscape.result_surface`).
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dims not in (1, 2) or isinstance(dims, bool):
        raise ConfigError(f"dims must be 1 or 2, got {dims!r}")
    if bn not in BN_MODES:
        raise unknown_name("bn", bn, BN_MODES)
    if engine not in ENGINES:
        raise unknown_name("engine", engine, ENGINES)
    if not any(first_layer is m for m in FIRST_LAYER_MODES) and first_layer != "auto":
        raise ConfigError(f"first_layer must be 'auto', True or False, got {first_layer!r}")
    batch_size = _check_int("batch_size", batch_size, 1)
    if max_samples is not None:
        max_samples = _check_int("max_samples", max_samples, 1)
    if points_per_batch is not None:
        points_per_batch = _check_int("points_per_batch", points_per_batch, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    sizes = _steps(steps, dims)
    if not any(True for _ in model.parameters()):
        raise ModelError("expected a model with parameters, got one with none")

    # ---- data
    splits, task = split_data(data)
    if split not in splits:
        raise unknown_name("split", split, tuple(splits))
    x, y = splits[split]
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"split {split!r}: {x.shape[0]} inputs but {y.shape[0]} targets")
    if x.shape[0] == 0:
        raise ConfigError(f"split {split!r} has no samples")
    loss_name = loss if loss is not None else (
        default_loss(task) if task is not None else default_loss(y))
    check_loss_fits(loss_name, y)
    x, y = _subset(x, y, max_samples, seed, 0)

    # ---- private copy, parameters, device
    _, dtype = model_device_dtype(model)
    dev = torch.device(device) if device is not None else model_device_dtype(model)[0]
    net = copy.deepcopy(model).to(dev)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    base = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.detach() for n, b in net.named_buffers()}
    x = x.to(dev, dtype) if x.is_floating_point() else x.to(dev)
    y = y.to(dev, dtype) if y.is_floating_point() else y.to(dev)
    with_bn = has_batchnorm(net)
    bn_used = bn if with_bn else "keep"

    kind, dirs, info = _resolve_directions(directions, net, base, dims, trajectory=trajectory,
                                           seed=seed, include_bias=include_bias,
                                           include_bn=include_bn)
    if span is None:
        ranges = _pca_span(info["trajectory_coords"], dims) if kind == "pca-trajectory" \
            else _ranges(1.0, dims)
    else:
        ranges = _ranges(span, dims)
    axes = [np.linspace(lo, hi, s) for (lo, hi), s in zip(ranges, sizes)]
    coords_np = np.array(np.meshgrid(*axes, indexing="ij")).reshape(dims, -1).T  # (P, dims)
    total_points = coords_np.shape[0]

    # ---- output size, loss denominator, memory per point
    out1, act_numel = _activation_numel(net, x[:1])
    _check_output(out1, y[:1], loss_name)
    denom = x.shape[0] if loss_name == "cross_entropy" else x.shape[0] * int(out1[0].numel())
    num_params = sum(p.numel() for p in base.values())
    if points_per_batch is None:
        per_point = 4 * (num_params + min(batch_size, x.shape[0]) * act_numel)
        budget, cap = _MEMORY_BUDGET, 64
        if dev.type == "cuda":  # a quarter of the free memory, at most 4 GiB
            free, _ = torch.cuda.mem_get_info(dev)
            budget, cap = min(4 * 2 ** 30, free // 4), 256
        points_per_batch = int(max(1, min(cap, budget // max(per_point, 1))))

    # ---- resume
    key = {"dims": dims, "steps": sizes, "ranges": [list(r) for r in ranges],
           "directions": kind, "seed": seed, "include_bias": include_bias,
           "include_bn": include_bn, "split": split, "loss": loss_name,
           "max_samples": max_samples, "bn": bn_used, "num_samples": int(x.shape[0]),
           "model": _hash_tensors(*base.values(), *buffers.values()),
           "data": _hash_tensors(x, y), "directions_sha256": directions_fingerprint(dirs)}
    resume_path = Path(resume) if resume is not None else None
    done: dict[int, tuple[float, float]] = {}
    if resume_path is not None:
        if resume_path.is_dir():
            raise ConfigError(f"resume must be a file path, got the directory {resume_path}")
        done = {i: v for i, v in _read_resume(resume_path, key).items() if i < total_points}
    resumed = len(done)

    # ---- engines
    mode = engine if engine != "auto" else ("loop" if dev.type == "cpu" else "vmap")
    note = None
    if bn_used == "recompute" and mode != "sequential":
        note = ("bn='recompute' re-estimates BatchNorm statistics at every point (a buffer "
                "update vmap cannot batch): evaluated point by point")
        mode = "sequential"
    elif engine == "auto" and mode == "loop":
        note = ("CPU: one functional forward per point (vmap over stacked parameter sets "
                "multiplies the activation memory by points_per_batch and measured slower on "
                "CPUs; engine='vmap' forces it)")

    seq_engine = None

    def sequential() -> _SequentialEngine:
        nonlocal seq_engine
        if seq_engine is None:
            # BatchNorm statistics come from the training inputs (the evaluated subset when
            # the training split is the one evaluated)
            xtr, ytr = (x, y) if split == "train" else _subset(*splits["train"], max_samples,
                                                               seed, 1)
            ev = PointEvaluator(net, {"train": (xtr, ytr), "eval": (x, y)}, loss=loss_name,
                                bn="recompute" if bn_used == "recompute" else "keep",
                                batch_size=batch_size, seed=seed)
            seq_engine = _SequentialEngine(net, ev, base, dirs)
        return seq_engine

    fast = None if mode == "sequential" else _VmapEngine(
        net, base, dirs, buffers, x, y, loss_name, batch_size, batched=mode == "vmap",
        first_layer=first_layer)
    first_layer_used = fast.first_layer if fast is not None else None
    fallback_reason = None

    def run_chunk(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal fast, fallback_reason, mode, first_layer_used
        coords = torch.as_tensor(c, dtype=torch.float64, device=dev)
        if fast is not None:
            try:
                return fast(coords, denom)
            except DeepscopeError:
                raise
            except Exception as exc:  # noqa: BLE001 - no batching rule, control flow, ...
                if engine != "auto":
                    raise ModelError(f"engine {engine!r} cannot evaluate this model: "
                                     f"{type(exc).__name__}: {str(exc)[:300]}") from None
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                fallback_reason = (f"{mode} failed ({type(exc).__name__}: {first}); "
                                   f"evaluated point by point on a private copy")
                fast, mode, first_layer_used = None, "sequential", None
        return sequential()(coords, denom)

    # ---- evaluate the missing points, chunk by chunk (chunks fixed by grid index)
    todo = [i for i in range(total_points) if i not in done]
    chunks: dict[int, list[int]] = {}
    for i in todo:
        chunks.setdefault(i // points_per_batch, []).append(i)
    computed = 0
    with progress_bar(total=total_points, initial=resumed, enabled=progress,
                      desc=f"surface {'x'.join(map(str, sizes))}", unit="pt") as bar:
        for idx in chunks.values():
            losses, accs = run_chunk(coords_np[idx])
            for i, l, a in zip(idx, losses, accs):
                done[i] = (float(l), float(a))
            computed += len(idx)
            if resume_path is not None:
                _write_resume(resume_path, key, done)
            bar.update(len(idx))
            if callback is not None:
                callback(len(done), total_points)

    # ---- center
    zero_idx = None
    if all(np.any(ax == 0.0) for ax in axes):
        ij = [int(np.flatnonzero(ax == 0.0)[0]) for ax in axes]
        zero_idx = ij[0] * (sizes[1] if dims == 2 else 1) + (ij[1] if dims == 2 else 0)
        center_loss, center_acc = done[zero_idx]
    else:
        cl, ca = run_chunk(np.zeros((1, dims)))
        center_loss, center_acc = float(cl[0]), float(ca[0])

    # ---- result
    rows = []
    for p in range(total_points):
        i, j = (p // sizes[1], p % sizes[1]) if dims == 2 else (p, 0)
        l, a = done[p]
        rows.append({"i": i, "j": j, "a": float(coords_np[p, 0]),
                     "b": float(coords_np[p, 1]) if dims == 2 else 0.0,
                     "loss": l, "accuracy": a})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    finite = table[np.isfinite(table["loss"])]
    amin = finite["loss"].idxmin() if len(finite) else None
    elapsed = time.perf_counter() - t0
    evaluation = mode if computed else "resumed"
    summary = {
        "dims": dims, "steps": sizes, "num_points": total_points,
        "ranges": [list(r) for r in ranges],
        "directions": kind,
        "center_loss": center_loss, "center_accuracy": center_acc,
        "min_loss": float(finite["loss"].min()) if len(finite) else math.nan,
        "min_at": ([float(table.loc[amin, "a"]), float(table.loc[amin, "b"])][:dims]
                   if amin is not None else None),
        "max_loss": float(finite["loss"].max()) if len(finite) else math.nan,
        "num_nonfinite": int(total_points - len(finite)),
        "direction_norms": [direction_norm(d) for d in dirs],
        "parameter_norm": direction_norm(base),
        "direction_cosine": (direction_dot(dirs[0], dirs[1]) / max(
            direction_norm(dirs[0]) * direction_norm(dirs[1]), 1e-300)) if dims == 2 else None,
        "explained_variance": info.get("explained_variance"),
        "explained_variance_ratio": info.get("explained_variance_ratio"),
        "trajectory_coords": info.get("trajectory_coords"),
        "split": split, "loss": loss_name, "num_samples": int(x.shape[0]),
        "num_params": int(num_params), "bn": bn_used, "has_batchnorm": with_bn,
        "evaluation": evaluation,
        "fallback_reason": fallback_reason, "engine_note": note,
        "first_layer_shortcut": first_layer_used,
        "points_per_batch": points_per_batch,
        "points_computed": computed, "points_resumed": resumed,
        "time_s": elapsed,
        "time_per_point_s": elapsed / computed if computed else math.nan,
    }
    settings = {"dims": dims, "steps": sizes, "span": [list(r) for r in ranges],
                "directions": kind, "split": split, "loss": loss_name,
                "batch_size": batch_size, "max_samples": max_samples,
                "points_per_batch": points_per_batch, "bn": bn, "include_bias": include_bias,
                "include_bn": include_bn, "resume": str(resume_path) if resume_path else None,
                "seed": seed, "device": str(dev), "engine": engine, "first_layer": first_layer}
    dirs_cpu = [{k: v.detach().cpu().clone() for k, v in d.items()} for d in dirs]
    return SurfaceResult(kind="surface", table=table, summary=summary, settings=settings,
                         directions=dirs_cpu)
