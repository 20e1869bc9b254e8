"""Dynamic String Sampling (Freeman & Bruna, "Topology and Geometry of Half-Rectified Network
Optimization", ICLR 2017, Sec. 3 and Algorithm 1 "FindConnection").

Are θ_a and θ_b, both in the level set Ω(L0) = {θ : level(θ) <= L0}, connected inside it?

1. Evaluate the level on ``grid`` equally spaced points t ∈ [0, 1] of the straight segment
   (1 - t)θ_i + tθ_j. If the maximum is <= L0·(1 + tol), the segment passes.
2. Otherwise take a bead θ* on the segment: at the highest grid point (``bead="max"``) or at
   the midpoint (``bead="midpoint"``); train it (gradient steps on the training loss) until
   level(θ*) <= α·L0; insert it between θ_i and θ_j and check both new segments.
3. Refine breadth-wise: all failing segments of one depth get their beads (trained in
   parallel through :func:`deepscope.sweep.engines.execute` when an engine is given), then
   the segments of the next depth are checked. Failing segments at ``max_depth`` stop the
   search with "undetermined".

Verdicts: "yes" when every segment of the final path passes (a proof of connection: the
piecewise-linear path is inside Ω(L0(1+tol)) at every grid point); "undetermined" when the depth
limit is reached or a bead cannot be trained back into the level set (a bead that ends
between α·L0 and L0(1+tol) is still inserted and flagged ``reached_alpha=False``). DSS never
answers "no": failing to find a path proves nothing.

Normalized geodesic length of the path θ_0 = θ_a, ..., θ_K = θ_b (Freeman & Bruna, Sec. 3):
Σ_k ‖θ_{k+1} − θ_k‖ / ‖θ_K − θ_0‖; it is 1 exactly when no bead was needed.

The level is ``"train_loss"`` (mean training loss) or ``"test_error"`` (1 − test accuracy,
classification only), as the authors used both; beads always descend the training loss.
Bead training runs :func:`fit` on a private copy (the :class:`PointEvaluator`'s), with
:func:`torch.func.functional_call` on a flat parameter vector; BatchNorm layers use batch
statistics while training and re-estimated statistics when evaluated; dropout is off.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepscope.errors import ConfigError, unknown_name

__all__ = ["LEVELS", "BEAD_MODES", "DEFAULT_BEAD_TRAIN", "check_bead_train", "level_of",
           "fit", "geodesic_length", "bead_task", "find_connection", "derive_seed"]

LEVELS = ("train_loss", "test_error")
BEAD_MODES = ("max", "midpoint")
OPTIMIZERS = ("sgd", "adam")

#: Bead (and curve bend) training defaults: full-batch Adam, level checked every 10 steps.
DEFAULT_BEAD_TRAIN: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0,
                                      "max_steps": 2000, "batch_size": None, "check_every": 10}


def check_bead_train(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Complete and validate a ``bead_train`` dict (keys of :data:`DEFAULT_BEAD_TRAIN`)."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"bead_train must be a dict with keys {sorted(DEFAULT_BEAD_TRAIN)}, "
                          f"got {type(options).__name__}")
    bad = sorted(set(options) - set(DEFAULT_BEAD_TRAIN))
    if bad:
        raise ConfigError(f"bead_train: unknown keys {bad}: expected a subset of "
                          f"{sorted(DEFAULT_BEAD_TRAIN)}")
    out = {**DEFAULT_BEAD_TRAIN, **options}
    if out["optimizer"] not in OPTIMIZERS:
        raise unknown_name("bead_train optimizer", out["optimizer"], OPTIMIZERS)
    for key in ("lr", "momentum"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0 or (key == "lr" and v == 0):
            raise ConfigError(f"bead_train {key} must be a finite number "
                              f"{'> 0' if key == 'lr' else '>= 0'}, got {v!r}")
    for key, low, optional in (("max_steps", 0, False), ("batch_size", 1, True),
                               ("check_every", 1, False)):
        v = out[key]
        if optional and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"bead_train {key} must be an integer >= {low}"
                              f"{' or None' if optional else ''}, got {v!r}")
        out[key] = int(v)
    out["lr"], out["momentum"] = float(out["lr"]), float(out["momentum"])
    return out


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (numpy SeedSequence), stable across processes."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
               .generate_state(1)[0] & 0x7FFFFFFF)


# ----------------------------------------------------------------------------- levels

def level_of(evaluator, theta: Tensor, level: str) -> dict[str, float]:
    """``{"level", "loss", "error"}`` at θ: the level's split ("train" or "test") evaluated.

    ``train_loss``: level = mean training loss. ``test_error``: level = 1 − test accuracy.
    ``error`` is NaN for regression.
    """
    split = "train" if level == "train_loss" else "test"
    r = evaluator.evaluate(theta, split)
    loss, acc = r[f"{split}_loss"], r[f"{split}_accuracy"]
    err = 1.0 - acc if not math.isnan(acc) else math.nan
    return {"level": loss if level == "train_loss" else err, "loss": loss, "error": err}


# ----------------------------------------------------------------------------- training

def fit(evaluator, variables: Sequence[Tensor], point: Callable[[torch.Generator], Tensor],
        options: Mapping[str, Any], seed: int, *, done: Callable[[], bool] | None = None
        ) -> dict[str, Any]:
    """Minimize the training loss at ``point(gen)`` over the leaf tensors ``variables``.

    ``point(gen)`` returns a flat parameter vector built from ``variables`` (a bead: the
    variable itself; a Bezier curve: φ(t) with t drawn from ``gen``, Garipov et al. 2018).
    Mini-batches of the evaluator's training split (shuffled from ``seed``; full batch
    when ``batch_size`` is None) go through ``functional_call`` on the evaluator's private
    copy, which is put in eval mode except its BatchNorm layers (batch statistics); dropout
    is therefore off. ``done()`` is checked before the first step and every
    ``check_every`` steps; training stops when it returns True or after ``max_steps``.
    Returns ``{"steps", "stopped"}``.
    """
    from deepscope._params import functional_forward, unflatten
    from deepscope.data.dataset import batches
    from deepscope.train.evaluate import loss_function

    model: nn.Module = evaluator.copy
    x, y = evaluator.splits["train"]
    lossfn = loss_function(evaluator.loss)
    if options["optimizer"] == "adam":
        opt = torch.optim.Adam(list(variables), lr=options["lr"])
    else:
        opt = torch.optim.SGD(list(variables), lr=options["lr"], momentum=options["momentum"])
    gen = torch.Generator().manual_seed(int(seed))
    bs = options["batch_size"] or x.shape[0]
    # BatchNorm in training mode cannot normalize a batch of one sample: drop a trailing
    # batch of 1 (a different sample each shuffled epoch)
    drop_last = bool(evaluator.bn_modules) and x.shape[0] % bs == 1 and x.shape[0] > 1
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    step, stopped = 0, False
    model.eval()
    for m in evaluator.bn_modules:
        m.train()
    try:
        while True:
            for xb, yb in batches(x, y, bs, shuffle=bs < x.shape[0], generator=gen,
                                  drop_last=drop_last):
                if step % options["check_every"] == 0 and done is not None:
                    model.eval()
                    stopped = bool(done())
                    for m in evaluator.bn_modules:
                        m.train()
                if stopped or step >= options["max_steps"]:
                    return {"steps": step, "stopped": stopped}
                theta = point(gen)
                out = functional_forward(model, unflatten(theta, evaluator.layout), xb,
                                         buffers=buffers)
                loss = lossfn(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if evaluator.trainable_mask is not None:  # frozen parameters stay put
                    for v in variables:
                        if v.grad is not None:
                            v.grad.mul_(evaluator.trainable_mask)
                opt.step()
                step += 1
    finally:
        model.eval()


def train_bead(evaluator, theta0: Tensor, *, level: str, target: float,
               options: Mapping[str, Any], seed: int) -> tuple[Tensor, dict[str, Any]]:
    """Train θ0 until level(θ) <= target (or the step budget ends); return θ and a record."""
    theta = theta0.detach().clone().to(evaluator.device, evaluator.dtype).requires_grad_(True)
    last: dict[str, float] = {}

    def done() -> bool:
        last.update(level_of(evaluator, theta.detach(), level))
        return last["level"] <= target

    run = fit(evaluator, [theta], lambda g: theta, options, seed, done=done)
    theta = theta.detach()
    if not run["stopped"]:  # budget spent: the level at the final iterate
        last.update(level_of(evaluator, theta, level))
    return theta, {"steps": run["steps"], "level_final": last["level"],
                   "loss_final": last["loss"], "error_final": last["error"],
                   "reached_alpha": last["level"] <= target}


# ----------------------------------------------------------------------------- worker

def _evaluator_from(payload: Mapping[str, Any]):
    from deepscope.landscape.evaluate import PointEvaluator
    model = payload.get("model")
    if model is None:  # another process: rebuild the architecture, load the buffers
        from deepscope.nets import build_model
        # in the driver's floating dtype (float64 models stay float64 in the workers)
        model = build_model(payload["arch"], seed=0).to(payload["device"],
                                                        payload.get("dtype", torch.float32))
        if payload["buffers"]:
            model.load_state_dict(payload["buffers"], strict=False)
    # the same BatchNorm re-estimation inputs as the driver's evaluator
    return PointEvaluator(model, payload["splits"], loss=payload["loss"], bn=payload["bn"],
                          batch_size=payload["batch_size"], bn_inputs=payload["bn_inputs"],
                          frozen=payload.get("frozen", ()))


def bead_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one bead (a top-level function, so process-pool and Ray workers can run it).

    Payload (picklable): ``id``, ``theta`` (CPU tensor), ``arch`` (a deepscope arch spec),
    ``buffers`` (state-dict buffers), ``splits`` ({split: (x, y)} CPU tensors),
    ``bn_inputs``, ``loss``, ``bn``, ``batch_size``, ``device``, ``dtype``, ``level``,
    ``target``, ``options`` (completed bead_train), ``seed``, ``threads``; with the local engine
    ``model`` (the template module) replaces ``arch``/``buffers``.
    Outcome: ``id``, ``status`` ("done"/"failed"), ``theta`` (CPU), the record of
    :func:`train_bead`, ``error``.
    """
    threads = payload.get("threads")
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))
    try:
        ev = _evaluator_from(payload)
        theta, rec = train_bead(ev, payload["theta"], level=payload["level"],
                                target=payload["target"], options=payload["options"],
                                seed=payload["seed"])
        return {"id": payload["id"], "status": "done", "theta": theta.cpu(), "error": None,
                **rec}
    except Exception as exc:  # reported per bead; the driver decides
        from deepscope.sweep.worker import one_line
        return {"id": payload["id"], "status": "failed", "error": one_line(exc)}


# ----------------------------------------------------------------------------- DSS

def geodesic_length(points: Sequence[Tensor]) -> float:
    """Σ_k ‖θ_{k+1} − θ_k‖ / ‖θ_last − θ_first‖ (float64 norms)."""
    if len(points) < 2:
        raise ConfigError(f"a path needs at least 2 points, got {len(points)}")
    p = [t.detach().double().reshape(-1).cpu() for t in points]
    total = sum(float(torch.linalg.vector_norm(b - a)) for a, b in zip(p[:-1], p[1:]))
    chord = float(torch.linalg.vector_norm(p[-1] - p[0]))
    if chord == 0.0:
        raise ConfigError("the path's end points coincide: the normalized length is undefined")
    return total / chord


def _segment_grid(evaluator, left: dict, right: dict, grid: int, level: str
                  ) -> list[dict[str, float]]:
    rows = []
    for t in np.linspace(0.0, 1.0, grid):
        t = float(t)
        if t == 0.0:
            rec = left["record"]
        elif t == 1.0:
            rec = right["record"]
        else:
            rec = level_of(evaluator, (1.0 - t) * left["theta"] + t * right["theta"], level)
        rows.append({"t": t, **rec})
    return rows


def find_connection(evaluator, theta_a: Tensor, theta_b: Tensor, *, threshold: float,
                    level: str = "train_loss", alpha: float = 0.95, tol: float = 0.0,
                    grid: int = 20, bead: str = "max", max_depth: int = 10,
                    bead_train: Mapping[str, Any] | None = None, run_beads=None,
                    seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run DSS between θ_a and θ_b (both in the level set); return the path and its log.

    ``run_beads(payloads) -> outcomes`` trains a depth's beads (see :func:`bead_task`;
    default: sequentially in this process). Returns ``connected``, ``beads`` (the path's
    points, end points included), ``segments`` (per path segment: its grid rows), ``log``
    (one dict per trained bead), ``depth`` (deepest segment checked), ``stop_reason``.
    """
    from deepscope._progress import progress_bar

    options = check_bead_train(bead_train)
    limit = threshold * (1.0 + tol)
    target = alpha * threshold
    make = _LocalBeads(evaluator, level, target, options) if run_beads is None else run_beads
    nodes = [{"theta": theta_a, "record": level_of(evaluator, theta_a, level), "depth": 0},
             {"theta": theta_b, "record": level_of(evaluator, theta_b, level), "depth": 0}]
    for name, node in zip("ab", nodes):
        if not node["record"]["level"] <= limit:
            raise ConfigError(f"end point {name} has {level} {node['record']['level']:.6g} "
                              f"above the threshold L0(1+tol) = {limit:.6g}: both end points "
                              f"must lie in the level set (train them below L0 first)")
    path = [0, 1]                       # node ids in path order
    grids: dict[tuple[int, int], list] = {}
    frontier = [(0, 1)]
    log: list[dict[str, Any]] = []
    connected, reason, depth = "undetermined", "", 0
    bar = progress_bar(total=max_depth + 1, desc="dss depth", enabled=progress)
    try:
        for depth in range(max_depth + 1):
            failing = []
            for seg in frontier:
                rows = _segment_grid(evaluator, nodes[seg[0]], nodes[seg[1]], grid, level)
                grids[seg] = rows
                if not max(r["level"] for r in rows) <= limit:
                    failing.append(seg)
            bar.update(1)
            if not failing:
                connected, reason = "yes", "every segment passes"
                break
            if depth == max_depth:
                reason = f"depth limit {max_depth} reached with {len(failing)} failing segments"
                break
            payloads = []
            for k, (i, j) in enumerate(failing):
                rows = grids[(i, j)]
                if bead == "max":
                    t = max(rows, key=lambda r: (r["level"], -abs(r["t"] - 0.5)))["t"]
                else:
                    t = 0.5
                theta0 = (1.0 - t) * nodes[i]["theta"] + t * nodes[j]["theta"]
                on_grid = [r["level"] for r in rows if r["t"] == t]
                level0 = on_grid[0] if on_grid else level_of(evaluator, theta0, level)["level"]
                payloads.append({"id": f"d{depth}-{k}", "theta": theta0.detach(),
                                 "seed": derive_seed(seed, depth, k),
                                 "_seg": (i, j), "_t": t, "_level0": level0})
            outcomes = {o["id"]: o for o in make([{k: v for k, v in p.items()
                                                   if not k.startswith("_")}
                                                  for p in payloads])}
            new_frontier, stop = [], []
            for p in payloads:
                o = outcomes[p["id"]]
                i, j = p["_seg"]
                entry = {"bead": None, "depth": depth + 1, "left": i, "right": j,
                         "t_init": p["_t"], "level_init": p["_level0"],
                         "level_final": o.get("level_final", math.nan),
                         "steps": o.get("steps", 0),
                         "reached_alpha": bool(o.get("reached_alpha", False)),
                         "inserted": False, "error": o.get("error")}
                if o["status"] == "done" and o["level_final"] <= limit:
                    theta = o["theta"].to(evaluator.device, evaluator.dtype)
                    nid = len(nodes)
                    nodes.append({"theta": theta, "depth": depth + 1,
                                  "record": {"level": o["level_final"], "loss": o["loss_final"],
                                             "error": o["error_final"]}})
                    path.insert(path.index(j), nid)
                    new_frontier += [(i, nid), (nid, j)]
                    entry.update(bead=nid, inserted=True)
                else:
                    stop.append(entry)
                log.append(entry)
            if stop:
                errors = [e["error"] for e in stop if e["error"]]
                reason = (f"bead training failed: {errors[0]}" if errors else
                          f"{len(stop)} bead(s) could not be trained into the level set "
                          f"(level <= {limit:.6g}) within {options['max_steps']} steps")
                break
            frontier = new_frontier
    finally:
        bar.close()
    for i, j in zip(path[:-1], path[1:]):
        # beads inserted at the depth where another bead failed: their two new segments
        # were not checked yet; evaluate them so the returned profile covers the whole path
        if (i, j) not in grids:
            grids[(i, j)] = _segment_grid(evaluator, nodes[i], nodes[j], grid, level)
    segments = [(i, j, grids[(i, j)]) for i, j in zip(path[:-1], path[1:])]
    return {"connected": connected, "stop_reason": reason, "depth": depth,
            "beads": [nodes[i]["theta"] for i in path], "bead_ids": path,
            "bead_depths": [nodes[i]["depth"] for i in path], "segments": segments,
            "log": log, "options": options}


class _LocalBeads:
    """Train payloads one after the other on the driver's own evaluator (no copies)."""

    def __init__(self, evaluator, level, target, options):
        self.ev, self.level, self.target, self.options = evaluator, level, target, options

    def __call__(self, payloads):
        out = []
        for p in payloads:
            theta, rec = train_bead(self.ev, p["theta"], level=self.level, target=self.target,
                                    options=self.options, seed=p["seed"])
            out.append({"id": p["id"], "status": "done", "theta": theta, "error": None, **rec})
        return out
