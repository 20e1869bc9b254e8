"""Are two solutions connected inside a level set? :func:`connect` answers with one of four
methods and returns the path, its normalized length and its loss profile.

- ``"dss"``: Dynamic String Sampling (Freeman & Bruna, ICLR 2017; :mod:`.dss`). "yes" proves
  a piecewise-linear path inside {level <= L0(1+tol)} (checked on ``grid`` points per
  segment); the depth limit or a bead that cannot be trained into the level set gives
  "undetermined". DSS never says "no".
- ``"linear"``: the straight segment only (``grid`` points). "yes" when its maximum is
  <= L0(1+tol), otherwise "no": the segment leaves the level set (the two points are not
  *linearly* connected; another path may exist).
- ``"bezier"`` / ``"polychain"``: one trained bend (Garipov et al., NeurIPS 2018;
  :mod:`.curves`), evaluated at ``points`` (61) values of t. "yes" when the maximum is
  <= L0(1+tol), otherwise "undetermined" (a failed curve proves nothing either).

The level is ``"train_loss"`` (mean training loss) or ``"test_error"`` (1 − test accuracy,
classification), as in Freeman & Bruna. Both end points must be in the level set
(level <= L0(1+tol)); otherwise a ConfigError says which one is not.

Models are never touched: everything runs on the private copy of a
:class:`~deepscope.landscape.evaluate.PointEvaluator` (BatchNorm statistics re-estimated at
every evaluated point by default) through ``torch.func.functional_call``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepscope.errors import ConfigError, unknown_name
from deepscope.landscape.dss import (BEAD_MODES, LEVELS, bead_task, check_bead_train,
                                     find_connection, geodesic_length, level_of)
from deepscope.landscape.result_connect import COLUMNS, ConnectResult
from deepscope._precision import ieee_float32

__all__ = ["connect", "METHODS", "ConnectResult"]

METHODS = ("dss", "bezier", "polychain", "linear")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _number(name: str, v: Any, *, low: float, low_open: bool, high: float | None = None
            ) -> float:
    ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
        and math.isfinite(float(v)) and (float(v) > low if low_open else float(v) >= low) \
        and (high is None or float(v) <= high)
    if not ok:
        rng = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high else "")
        raise ConfigError(f"{name} must be a finite number {rng}, got {v!r}")
    return float(v)


def _bead_runner(evaluator, arch, level: str, target: float, options: dict, engine: str,
                 workers: int, threads: int | None):
    """payloads -> outcomes through :func:`deepscope.sweep.engines.execute` (for "ray" the
    caller holds a :func:`deepscope.sweep.engines.ray_session`)."""
    from deepscope.sweep.engines import execute

    base = {"splits": {k: (x.cpu(), y.cpu()) for k, (x, y) in evaluator.splits.items()},
            "bn_inputs": evaluator.bn_inputs.cpu(), "loss": evaluator.loss,
            "bn": evaluator.bn, "batch_size": evaluator.batch_size, "level": level,
            "target": target, "options": options, "device": str(evaluator.device),
            "dtype": evaluator.dtype, "frozen": sorted(evaluator.frozen)}
    if engine == "local":
        base["model"] = evaluator.copy
    else:
        base["arch"] = arch
        base["buffers"] = {n: b.detach().cpu() for n, b in evaluator.buffers.items()}

    def run(payloads):
        full = [{**base, **p, "theta": p["theta"].cpu()} for p in payloads]
        return list(execute(bead_task, full, engine=engine, workers=workers, threads=threads))

    return run


@ieee_float32
def connect(a, b, data=None, method: str = "dss", threshold: float | None = None, *,
            level: str = "train_loss", alpha: float = 0.95, tol: float = 0.0,
            grid: int = 20, bead: str = "max", max_depth: int = 10,
            bead_train: Mapping[str, Any] | None = None, points: int = 61,
            engine: str = "local", workers: int | None = None, threads: int | None = None,
            address: str | None = None, loss: str | None = None, bn: str = "recompute",
            bn_samples: int | None = None, batch_size: int = 1024,
            max_samples: int | None = None, seed: int = 0, progress: bool = True
            ) -> ConnectResult:
    """Look for a path from ``a`` to ``b`` inside the level set {level <= threshold}.

    Args:
        a, b: models of the same architecture, or checkpoint paths.
        data: Dataset, ``(x, y)`` or ``{split: (x, y)}``; None takes ``a``'s checkpoint data.
        method: ``"dss"``, ``"bezier"``, ``"polychain"`` or ``"linear"`` (module docstring).
        threshold: L0 (> 0), in units of the level.
        level: ``"train_loss"`` or ``"test_error"``.
        alpha: DSS beads are trained down to ``alpha * L0`` (0 < alpha <= 1).
        tol: a segment / curve passes when its maximum is <= ``L0 * (1 + tol)``.
        grid: points per segment (DSS, linear), end points included.
        bead: where DSS places a bead on a failing segment: ``"max"`` (highest grid point)
            or ``"midpoint"``.
        max_depth: DSS refinement depth limit.
        bead_train: DSS bead / curve bend training: ``optimizer`` ("adam" | "sgd"), ``lr``,
            ``momentum``, ``max_steps``, ``batch_size`` (None: full batch), ``check_every``
            (defaults :data:`deepscope.landscape.dss.DEFAULT_BEAD_TRAIN`).
        points: evaluation points along a Bezier curve / polygonal chain.
        engine, workers, threads, address: DSS trains the beads of one depth in parallel
            with ``"process"`` or ``"ray"`` (needs a deepscope-built architecture:
            ``model.deepscope_spec`` or a checkpoint); ``"local"`` trains them in turn.
        loss, bn, bn_samples, batch_size, max_samples: see
            :class:`~deepscope.landscape.evaluate.PointEvaluator`; ``bn="keep"`` is refused
            for BatchNorm models (it would use a's running statistics at every point).
        seed: evaluation subsets, bead and bend training.

    Returns:
        :class:`ConnectResult`: table = the loss profile (``COLUMNS``); summary =
        ``connected`` ("yes"/"no"/"undetermined"), ``normalized_length``, ``num_beads``,
        ``max_level``, ``depth`` and the rest; ``beads`` = the path's points.
    """
    from deepscope.landscape.evaluate import PointEvaluator
    from deepscope.sweep.engines import check_engine

    if method not in METHODS:
        raise unknown_name("method", method, METHODS)
    if level not in LEVELS:
        raise unknown_name("level", level, LEVELS)
    if bead not in BEAD_MODES:
        raise unknown_name("bead", bead, BEAD_MODES)
    if threshold is None:
        raise ConfigError("threshold (L0) is required: the level set is {level <= L0}")
    threshold = _number("threshold", threshold, low=0.0, low_open=True)
    alpha = _number("alpha", alpha, low=0.0, low_open=True, high=1.0)
    tol = _number("tol", tol, low=0.0, low_open=False)
    for name, v, low in (("grid", grid, 2), ("max_depth", max_depth, 0), ("points", points, 2)):
        if not _is_int(v) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    options = check_bead_train(bead_train)
    n_workers = check_engine(engine, workers, address, threads=threads)

    from deepscope.landscape.interpolate import resolve_model
    model_a, ck_a = resolve_model(a, "a")
    model_b, ck_b = resolve_model(b, "b")
    if data is None:
        if ck_a is None:
            raise ConfigError("data is required unless a is a checkpoint (whose dataset is "
                              "used)")
        data = ck_a.dataset()
    if loss is None and ck_a is not None:
        loss = ck_a.loss_name
    # parameters frozen (requires_grad=False) in either model are held fixed by bead and bend
    # training: the path stays in the space the models are trained in
    frozen = {n for m in (model_a, model_b) for n, p in m.named_parameters()
              if not p.requires_grad}
    ev = PointEvaluator(model_a, data, loss=loss, bn=bn, bn_samples=bn_samples,
                        batch_size=batch_size, max_samples=max_samples, seed=seed,
                        frozen=frozen & {n for n, _ in model_a.named_parameters()})
    if bn == "keep" and ev.bn_modules:
        # "keep" would evaluate every point, b and the beads included, with a's running
        # statistics: b's level would not be b's, and beads have no statistics of their own
        raise ConfigError("bn='keep' cannot be used by connect() on a model with BatchNorm: "
                          "it would evaluate b and every bead with a's running statistics; "
                          "use bn='recompute'")
    if level == "test_error":
        if "test" not in ev.splits:
            raise ConfigError("level 'test_error' needs a test split: pass a Dataset or "
                              "{'train': (x, y), 'test': (x, y)}")
        if ev.splits["test"][1].is_floating_point():
            raise ConfigError("level 'test_error' needs integer class labels (classification); "
                              "got regression targets (use level='train_loss')")
    theta_a, theta_b = ev.vector(model_a), ev.vector(model_b)
    # same parameter shapes are not enough: b is evaluated in a's architecture (a copy of a),
    # so module types (activations, ...) and buffers must agree as well
    from deepscope.landscape.interpolate import check_same_architecture
    check_same_architecture(model_a, model_b)
    if bool(torch.equal(theta_a, theta_b)):
        raise ConfigError("a and b have identical parameters: nothing to connect")
    settings = {"method": method, "threshold": threshold, "level": level, "alpha": alpha,
                "tol": tol, "grid": grid, "bead": bead, "max_depth": max_depth,
                "bead_train": options, "points": points, "engine": engine,
                "workers": workers, "threads": threads, "loss": ev.loss, "bn": ev.bn,
                "bn_samples": bn_samples, "batch_size": batch_size,
                "max_samples": max_samples, "seed": seed,
                "a": str(a) if ck_a is not None else None,
                "b": str(b) if ck_b is not None else None}
    limit = threshold * (1.0 + tol)
    summary: dict[str, Any] = {"method": method, "level": level, "threshold": threshold}

    if method in ("dss", "linear"):
        if method == "dss":
            arch = getattr(model_a, "deepscope_spec", None)
            if arch is None and ck_a is not None:
                arch = ck_a.arch
            if engine != "local" and arch is None:
                raise ConfigError(f"engine {engine!r} rebuilds the model in its workers from "
                                  f"a deepscope architecture spec; this model has none "
                                  f"(build it with deepscope.build_model or pass "
                                  f"checkpoints, or use engine='local')")
            runner = _bead_runner(ev, arch, level, alpha * threshold, options, engine,
                                  n_workers, threads)
            from contextlib import nullcontext
            from deepscope.sweep.engines import ray_session
            with ray_session(address, n_workers) if engine == "ray" else nullcontext():
                out = find_connection(ev, theta_a, theta_b, threshold=threshold, level=level,
                                      alpha=alpha, tol=tol, grid=grid, bead=bead,
                                      max_depth=max_depth, bead_train=options,
                                      run_beads=runner, seed=seed, progress=progress)
            segments = [rows for _, _, rows in out["segments"]]
            beads = out["beads"]
            log = out["log"]
            for e in log:  # where each inserted bead sits in result.beads
                e["path_index"] = (out["bead_ids"].index(e["bead"]) if e["inserted"]
                                   else None)
            summary.update(connected=out["connected"], stop_reason=out["stop_reason"],
                           depth=out["depth"])
        else:
            rec_a, rec_b = level_of(ev, theta_a, level), level_of(ev, theta_b, level)
            for name, rec in (("a", rec_a), ("b", rec_b)):
                if not rec["level"] <= limit:
                    raise ConfigError(f"end point {name} has {level} {rec['level']:.6g} above "
                                      f"the threshold L0(1+tol) = {limit:.6g}")
            from deepscope.landscape.dss import _segment_grid
            rows = _segment_grid(ev, {"theta": theta_a, "record": rec_a},
                                 {"theta": theta_b, "record": rec_b}, grid, level)
            segments, beads, log = [rows], [theta_a, theta_b], []
            ok = max(r["level"] for r in rows) <= limit
            summary.update(connected="yes" if ok else "no",
                           stop_reason="the segment passes" if ok else
                           "the straight segment leaves the level set", depth=0)
        table = _profile(segments, beads)
        length = geodesic_length(beads)
        summary.update(normalized_length=length, num_beads=len(beads))
    else:
        from deepscope.landscape.curves import curve_length, evaluate_curve, train_bend
        for name, th in (("a", theta_a), ("b", theta_b)):
            v = level_of(ev, th, level)["level"]
            if not v <= limit:
                raise ConfigError(f"end point {name} has {level} {v:.6g} above the threshold "
                                  f"L0(1+tol) = {limit:.6g}")
        bend, info = train_bend(ev, method, theta_a, theta_b, options, seed)
        rows = evaluate_curve(ev, method, theta_a, bend, theta_b, level, points)
        table = _curve_profile(rows, method, theta_a, bend, theta_b)
        beads, log = [theta_a, bend, theta_b], []
        chord = float(torch.linalg.vector_norm((theta_b - theta_a).double()))
        length = curve_length(method, theta_a, bend, theta_b) / chord
        ok = float(table["level"].max()) <= limit
        summary.update(connected="yes" if ok else "undetermined",
                       stop_reason="the curve stays in the level set" if ok else
                       "the trained curve leaves the level set", depth=0,
                       normalized_length=length, num_beads=3, bend_steps=info["steps"])
    lv = table["level"].to_numpy(dtype=float)
    imax = int(np.nanargmax(lv)) if np.isfinite(lv).any() else 0
    err = table["error"].to_numpy(dtype=float)
    chord = float(torch.linalg.vector_norm((theta_b - theta_a).double()))
    summary.update(
        max_level=float(lv[imax]), argmax_position=float(table["position"].iloc[imax]),
        max_loss=float(table["loss"].max()),
        max_error=float(np.nanmax(err)) if np.isfinite(err).any() else math.nan,
        level_a=float(lv[0]), level_b=float(lv[-1]), distance=chord,
        path_length=summary["normalized_length"] * chord,
        beads_trained=len(log), beads_inserted=sum(1 for e in log if e["inserted"]),
        beads_below_alpha=sum(1 for e in log if e["reached_alpha"]),
        beads_short_of_alpha=sum(1 for e in log if not e["reached_alpha"]),
        bead_log=log)
    return ConnectResult(kind="connect", table=table, summary=summary, settings=settings,
                         beads=[t.detach() for t in beads], evaluator=ev)


def _profile(segments: list[list[dict]], beads: list) -> pd.DataFrame:
    """DSS / linear profile: rows of every segment in path order, position by arc length."""
    chord = float(torch.linalg.vector_norm((beads[-1] - beads[0]).double()))
    rows, start = [], 0.0
    for k, seg in enumerate(segments):
        seg_len = float(torch.linalg.vector_norm((beads[k + 1] - beads[k]).double())) / chord
        for r in seg:
            rows.append({"position": start + r["t"] * seg_len, "segment": k, "t": r["t"],
                         "level": r["level"], "loss": r["loss"], "error": r["error"],
                         "bead": r["t"] in (0.0, 1.0)})
        start += seg_len
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _curve_profile(rows: list[dict], kind: str, a, c, b) -> pd.DataFrame:
    from deepscope.landscape.curves import curve_point
    chord = float(torch.linalg.vector_norm((b - a).double()))
    pts = [curve_point(kind, r["t"], a, c, b).double() for r in rows]
    pos = [0.0]
    for p, q in zip(pts[:-1], pts[1:]):
        pos.append(pos[-1] + float(torch.linalg.vector_norm(q - p)) / chord)
    out = [{"position": pos[i], "segment": r["segment"], "t": r["t"], "level": r["level"],
            "loss": r["loss"], "error": r["error"], "bead": r["t"] in (0.0, 1.0)}
           for i, r in enumerate(rows)]
    return pd.DataFrame(out, columns=list(COLUMNS))
