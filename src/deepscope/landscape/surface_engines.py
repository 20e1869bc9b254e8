"""Evaluation engines of :func:`deepscope.landscape.surface.surface`: mean loss and accuracy
at chunks of grid points ``theta + sum_j c_j d_j``, always on private copies of the model.

The cost floor is one forward pass over the evaluation data per grid point. Engines
(``engine``, :class:`GridEvaluator` picks and runs them):

- ``"vmap"``: grid points are evaluated ``points_per_batch`` at a time: the parameter sets
  ``theta + a_k d1 + b_k d2`` are stacked (one ``addmm``) and one :func:`torch.func.vmap` over
  :func:`torch.func.functional_call` runs them together (one call, one host synchronisation per
  chunk of points and data batch) (:class:`VmapEngine`).
- ``"loop"``: one point at a time on a private copy whose parameters are views into one flat
  buffer, so each point costs one ``addmv`` (theta + c @ D) and one plain forward
  (:class:`VmapEngine` with ``batched=False``).
- ``"sequential"``: :class:`deepscope.landscape.evaluate.PointEvaluator` on a private copy
  (:class:`SequentialEngine`); the only engine for ``bn="recompute"`` (updating running
  statistics is a side effect vmap cannot batch).
- ``"auto"`` (default) takes vmap on GPUs. On CPUs it takes vmap when one grid point's
  activations (a data batch, the input excluded) fit in ``CPU_VMAP_POINT_BYTES`` (768 KiB) and
  the loop above: a small forward is a dozen kernels whose dispatch dominates, which vmap
  pays once per chunk (4.4x less time per point than loss-landscapes on its own example
  network, 784-32-10 with 512 samples and the first-layer shortcut); a large one is
  compute- and memory-bound, and vmap multiplies its activation memory by
  ``points_per_batch`` (about 2x slower than the loop on a 64-256-128-10 MLP with 1797
  samples; benchmarks/surface_vs_loss_landscapes.py). Where vmap cannot run the model (an
  operator without a batching rule, e.g. recurrent layers) on a CPU it falls back to the
  loop; where the loop (or vmap on a GPU) cannot (data-dependent Python control flow, ...)
  to evaluating point by point (sequential); ``fallback_reason`` says why; an
  explicit engine that fails raises :class:`ModelError`.

``points_per_batch=None`` sizes a chunk from a memory budget (:func:`default_points_per_batch`:
stacked parameters plus activations, 256 MiB and at most 64 points on CPUs, a quarter of the
free memory up to 4 GiB and 256 points on GPUs).

First-layer shortcut (``first_layer``): vmap and the loop evaluate a first Linear /
convolution layer on the raw input as ``Z_0 + a Z_1 + b Z_2`` from products computed once per
data batch (:mod:`deepscope.landscape.surface_shortcut`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepscope.errors import DeepscopeError, ModelError
from deepscope.landscape.evaluate import PointEvaluator
from deepscope.landscape.surface_shortcut import FirstLayerPlane, first_layer_plane
from deepscope.train.evaluate import _mse

__all__ = ["GridEvaluator", "VmapEngine", "SequentialEngine", "activation_numel",
           "default_points_per_batch", "ENGINES", "CPU_VMAP_POINT_BYTES"]

ENGINES = ("auto", "vmap", "loop", "sequential")
#: ``engine="auto"`` on a CPU takes vmap when one grid point's activations (one data batch,
#: the input excluded) take at most this many bytes, the loop above: small forwards are
#: dominated by per-kernel overhead, which vmap pays once per chunk; large ones by memory
#: traffic, which vmap multiplies (benchmarks/surface_vs_loss_landscapes.py)
CPU_VMAP_POINT_BYTES = 768 * 2 ** 10
_MEMORY_BUDGET = 256 * 2 ** 20  # bytes of stacked parameters + activations per chunk


class VmapEngine:
    """Loss sums and correct counts of K stacked parameter sets per call (torch.func.vmap);
    with ``batched=False`` the same functional evaluation one parameter set at a time.

    When the first parameterized layer is a Linear / convolution applied to the raw input
    (:mod:`deepscope.landscape.surface_shortcut`), its outputs along the grid are
    ``Z_0 + a Z_1 + b Z_2`` (:class:`FirstLayerPlane`): three products per data batch replace
    one per grid point.
    """

    def __init__(self, net: nn.Module, base: dict[str, Tensor], dirs: list[dict[str, Tensor]],
                 buffers: dict[str, Tensor], x: Tensor, y: Tensor, loss: str, batch_size: int,
                 batched: bool = True, first_layer: bool | str = "auto"):
        self.batched = batched
        self.base, self.dirs, self.buffers = base, dirs, dict(buffers)
        self.x, self.y, self.loss, self.batch_size = x, y, loss, batch_size
        self.classify = not y.is_floating_point()
        # cross-entropy of 2-D outputs as logsumexp minus the target logit (the same sum; under
        # vmap F.cross_entropy runs through a slow decomposition); labels must be valid
        # indices (F.cross_entropy's ignore_index=-100 keeps its own path)
        self.gather_ce = (loss == "cross_entropy" and self.classify and y.numel() > 0
                          and int(y.min()) >= 0)
        self.plane: FirstLayerPlane | None = None
        self.first_layer = None
        self.net = net
        if first_layer:
            got = first_layer_plane(net, x, base, dirs, batch_size, first_layer)
            if got is not None:
                self.net, self.plane, name = got
                self.first_layer = name
                self.buffers = {n: b for n, b in self.net.named_buffers()
                                if not n.endswith(f"{name}.coef") and n != f"{name}.coef"}
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
        if self.loss == "cross_entropy" and self.gather_ce and out.dim() == 2:
            total = (torch.logsumexp(out, -1)
                     - out.gather(-1, yb.unsqueeze(-1)).squeeze(-1)).sum()
        elif self.loss == "cross_entropy":
            total = F.cross_entropy(out, yb, reduction="sum")
        else:
            total = _mse(out, yb) * out.numel()
        if self.classify:
            correct = (out.argmax(dim=-1) == yb).sum()
        else:
            correct = torch.zeros((), dtype=torch.int64, device=out.device)
        return total, correct

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


class SequentialEngine:
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


def activation_numel(net: nn.Module, x1: Tensor) -> tuple[Tensor, int]:
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


def default_points_per_batch(num_params: int, batch_size: int, num_samples: int,
                             act_numel: int, device: torch.device) -> int:
    """Grid points per chunk from a memory budget: each point holds its parameters and the
    activations of one data batch (4 bytes each); 256 MiB and at most 64 points on CPUs, a
    quarter of the free memory (at most 4 GiB) and at most 256 points on GPUs."""
    per_point = 4 * (num_params + min(batch_size, num_samples) * act_numel)
    budget, cap = _MEMORY_BUDGET, 64
    if device.type == "cuda":  # a quarter of the free memory, at most 4 GiB
        free, _ = torch.cuda.mem_get_info(device)
        budget, cap = min(4 * 2 ** 30, free // 4), 256
    return int(max(1, min(cap, budget // max(per_point, 1))))


class GridEvaluator:
    """Loss and accuracy at chunks of grid points on the engine ``engine`` names (module
    docstring); under ``engine="auto"`` a vmap / loop engine that fails falls back to
    :class:`SequentialEngine` for this and every later chunk.

    ``mode`` is the engine in use, ``note`` why ``"auto"`` / ``bn`` chose it,
    ``fallback_reason`` why it fell back (None if not), ``first_layer`` the layer evaluated by
    the first-layer shortcut (None if none). ``train_data`` returns the inputs BatchNorm
    statistics are estimated from (called once, when the sequential engine is first needed).
    """

    def __init__(self, engine: str, device: torch.device, net: nn.Module,
                 base: dict[str, Tensor], dirs: list[dict[str, Tensor]],
                 buffers: dict[str, Tensor], x: Tensor, y: Tensor, *, loss: str,
                 batch_size: int, denom: int, bn: str, first_layer: bool | str, seed: int,
                 train_data: Callable[[], tuple[Tensor, Tensor]],
                 point_bytes: int | None = None):
        self.engine, self.device, self.denom = engine, device, denom
        self._seq_args = (net, base, dirs, x, y, loss, bn, batch_size, seed, train_data)
        self._seq: SequentialEngine | None = None
        small = point_bytes is not None and point_bytes <= CPU_VMAP_POINT_BYTES
        mode = engine if engine != "auto" else (
            "loop" if device.type == "cpu" and not small else "vmap")
        self.note = None
        if bn == "recompute" and mode != "sequential":
            self.note = ("bn='recompute' re-estimates BatchNorm statistics at every point (a "
                         "buffer update vmap cannot batch): evaluated point by point")
            mode = "sequential"
        elif engine == "auto" and mode == "loop":
            self.note = ("CPU, activations of more than "
                         f"{CPU_VMAP_POINT_BYTES // 1024} KiB per grid point: one forward "
                         "per point (vmap over stacked parameter sets multiplies the "
                         "activation memory by points_per_batch and measured slower on CPUs "
                         "there; engine='vmap' forces it)")
        elif engine == "auto" and device.type == "cpu" and mode == "vmap":
            self.note = (f"CPU, activations of at most {CPU_VMAP_POINT_BYTES // 1024} KiB per "
                         "grid point: chunks of points through vmap (one call per chunk "
                         "instead of a dozen small kernels per point)")
        self.mode = mode
        self._fast_args = (net, base, dirs, buffers, x, y, loss, batch_size)
        self._first_layer_mode = first_layer
        self.fast = None if mode == "sequential" else VmapEngine(
            *self._fast_args, batched=mode == "vmap", first_layer=first_layer)
        self.first_layer = self.fast.first_layer if self.fast is not None else None
        self.fallback_reason: str | None = None

    def sequential(self) -> SequentialEngine:
        """The point-by-point engine (built on first use)."""
        if self._seq is None:
            net, base, dirs, x, y, loss, bn, batch_size, seed, train_data = self._seq_args
            xtr, ytr = train_data()
            ev = PointEvaluator(net, {"train": (xtr, ytr), "eval": (x, y)}, loss=loss,
                                bn="recompute" if bn == "recompute" else "keep",
                                batch_size=batch_size, seed=seed)
            self._seq = SequentialEngine(net, ev, base, dirs)
        return self._seq

    def __call__(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean losses and accuracies at the grid points ``c`` (``(K, dims)`` coordinates)."""
        coords = torch.as_tensor(c, dtype=torch.float64, device=self.device)
        while self.fast is not None:
            try:
                return self.fast(coords, self.denom)
            except DeepscopeError:
                raise
            except Exception as exc:  # noqa: BLE001 - no batching rule, control flow, ...
                if self.engine != "auto":
                    raise ModelError(f"engine {self.engine!r} cannot evaluate this model: "
                                     f"{type(exc).__name__}: {str(exc)[:300]}") from None
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                failed = f"{self.mode} failed ({type(exc).__name__}: {first})"
                if self.mode == "vmap" and self.device.type == "cpu":
                    # small forwards on a CPU: the plain loop is the next fastest
                    self.fallback_reason = f"{failed}; evaluated point by point (loop)"
                    self.mode = "loop"
                    self.fast = VmapEngine(*self._fast_args, batched=False,
                                           first_layer=self._first_layer_mode)
                    self.first_layer = self.fast.first_layer
                    continue
                self.fallback_reason = (f"{failed}; evaluated point by point on a private "
                                        f"copy")
                self.fast, self.mode, self.first_layer = None, "sequential", None
        return self.sequential()(coords, self.denom)
