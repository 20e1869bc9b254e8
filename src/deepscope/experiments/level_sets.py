"""The level-set study of Freeman & Bruna ("Topology and Geometry of Half-Rectified Network
Optimization", ICLR 2017, Sec. 4): how curved are the level sets {θ : L(θ) <= L0} as L0 drops?

For each threshold L0, pairs of models trained from different random initializations down
to L0 are joined by Dynamic String Sampling (:func:`deepscope.landscape.connect.connect`);
the normalized geodesic length of the path (1 for a convex level set) and its bead count
(end points included) are recorded against L0.

Models: each seed is trained once (``deepscope.train`` with ``target_loss`` = the smallest
L0) and snapshotted at the first epoch whose full-pass training loss is <= each L0 (a
checkpoint reaching that level). Pair k at a level joins the (2k)-th and (2k+1)-th seeds
that reached it; seeds that never reach a level are left out of its pairs and counted in
``summary["not_reached"]``.

Tasks (``TASKS``): ``quadratic`` and ``cubic`` regression (``polyreg``, degrees 2 and 3,
x ~ U[-1, 1]) with the paper's 1-4-4-1 ReLU MLP, and ``digits-cnn`` (the MiniAlexNet-style
CNN of :mod:`deepscope.nets.cnn` at width 0.25 on scikit-learn's 8x8 digits; slower), whose
level may also be the test error (``level="test_error"``), as the authors used for MNIST.
With the test error, seeds train until every threshold is reached (or the epoch cap).

The counterexample (their Sec. 2.2 / 4): a 2-3-2 ReLU network θ that fits its own outputs
exactly (loss 0) and the copy θ' with hidden units 0 and 1 swapped (the same function, loss
0). Near zero loss the level set splits into the permutation copies of θ: the straight
segment's midpoint has two identical units (a 2-unit network that cannot fit the data), and
gradient descent from it keeps them identical, so DSS cannot reach the level set with its
beads and answers "undetermined" (never "yes").

Published trend (read off their figures): quadratic regression length 1.27 at L0 = 0.125
rising to 1.86 at 0.001; cubic ≈ 1.00 for L0 >= 0.168 and 1.87 at 0.01; level sets look
nearly convex at high loss and elongate as L0 drops. Their data scales differ from
deepscope's polyreg, so compare trends, not thresholds.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from deepscope.errors import ConfigError, unknown_name
from deepscope.result import Result

__all__ = ["TASKS", "level_set_study", "counterexample_pair", "counterexample",
           "swap_hidden_units", "COLUMNS"]

def _polyreg_task(degree: int, thresholds: tuple[float, ...]) -> dict[str, Any]:
    """Freeman & Bruna's regressions: polyreg of ``degree`` fitted by a 1-4-4-1 ReLU MLP."""
    return {
        "data": {"name": "polyreg", "degree": degree, "n_train": 500, "n_test": 500,
                 "seed": 0},
        # He init: with PyTorch's default init the trained 1-4-4-1 nets kept only 4-5 of
        # their 8 ReLUs alive and beads between them stalled (1 of 3 pairs connected)
        "arch": {"arch": "mlp", "widths": [4, 4], "activation": "relu", "init": "he"},
        "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 25, "epochs": 150},
        "thresholds": thresholds,
        "bead_train": {"optimizer": "adam", "lr": 0.01, "max_steps": 2000,
                       "batch_size": None, "check_every": 10},
        "threads": 1,
    }


TASKS: dict[str, dict[str, Any]] = {
    "quadratic": _polyreg_task(2, (0.03, 0.01, 0.005)),
    "cubic": _polyreg_task(3, (0.3, 0.2, 0.1)),
    "digits-cnn": {
        "data": {"name": "digits", "flat": False, "seed": 0},
        "arch": {"arch": "cnn", "width": 0.25},
        "train": {"optimizer": "adam", "lr": 0.003, "batch_size": 32, "epochs": 30},
        "thresholds": (0.3, 0.1, 0.03),
        "test_error_thresholds": (0.1, 0.06, 0.04),
        "bead_train": {"optimizer": "adam", "lr": 1e-3, "max_steps": 500, "batch_size": 128,
                       "check_every": 10},
    },
}

_REFERENCE = ("Freeman & Bruna 2017 (read off their figures): quadratic 1.27 at L0=0.125 -> "
              "1.86 at 0.001; cubic ~1.00 for L0>=0.168, 1.87 at 0.01; MNIST CNN 1.00 at 4% "
              "test error -> 1.07 at 0.7% (4 -> 7 beads)")

#: Table columns, in order.
COLUMNS = ("task", "threshold", "pair", "seed_a", "seed_b", "level_a", "level_b",
           "connected", "normalized_length", "num_beads", "depth", "max_level",
           "beads_short_of_alpha", "time_s")


class _Snapshots:
    """Training callback: a copy of the model at the first epoch whose level (train loss or
    test error = 1 − test accuracy) is <= each L0; stops training once all are taken."""

    def __init__(self, thresholds: Sequence[float], level: str = "train_loss"):
        from deepscope.train.callbacks import Callback
        self.pending = sorted(thresholds, reverse=True)
        self.models: dict[float, torch.nn.Module] = {}
        outer = self

        class _CB(Callback):
            def on_epoch_end(self, state):
                if level == "train_loss":
                    value = state.row.get("train_loss")
                else:
                    acc = state.row.get("test_acc")
                    value = None if acc is None else 1.0 - acc
                if value is None or not math.isfinite(value):
                    return
                while outer.pending and value <= outer.pending[0]:
                    outer.models[outer.pending.pop(0)] = copy.deepcopy(state.model).eval()
                if not outer.pending:
                    state.request_stop("every threshold reached")

        self.callback = _CB()


def _thresholds(values, default) -> list[float]:
    vals = list(default if values is None else values)
    if not vals or any(isinstance(v, bool) or not isinstance(v, (int, float))
                       or not math.isfinite(v) or v <= 0 for v in vals):
        raise ConfigError(f"thresholds must be positive numbers, got {vals!r}")
    return sorted({float(v) for v in vals}, reverse=True)


def _check_dss_options(alpha, tol, grid, bead, max_depth) -> None:
    """Fail before any training on options connect() would reject."""
    from deepscope.landscape.dss import BEAD_MODES
    for name, v, ok, want in (("alpha", alpha, lambda v: 0 < v <= 1, "a number in (0, 1]"),
                              ("tol", tol, lambda v: v >= 0, "a number >= 0")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not ok(v):
            raise ConfigError(f"{name}: expected {want}, got {v!r}")
    for name, v, low in (("grid", grid, 2), ("max_depth", max_depth, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    if bead not in BEAD_MODES:
        raise unknown_name("bead", bead, BEAD_MODES)


def level_set_study(task: str = "quadratic", *, thresholds: Sequence[float] | None = None,
                    level: str = "train_loss", pairs: int = 3, alpha: float = 0.95,
                    tol: float = 0.0, grid: int = 20,
                    bead: str = "max", max_depth: int = 10,
                    bead_train: Mapping[str, Any] | None = None, epochs: int | None = None,
                    n_train: int | None = None, with_counterexample: bool = True,
                    engine: str = "local", workers: int | None = None,
                    threads: int | None = None, address: str | None = None, seed: int = 0,
                    progress: bool = True) -> Result:
    """Run the study; one table row per (threshold, pair) (``COLUMNS``).

    ``summary["by_threshold"]``: per L0 the number of pairs, of "yes" verdicts, and the mean
    normalized length and bead count over the connected ("yes") pairs (the length of an
    unfinished path means nothing); ``summary["counterexample"]``: the swapped-units verdict;
    ``summary["not_reached"]``: per L0 the seeds that never got there.

    ``threads``: torch threads for the whole study (and each bead task); None takes the
    task's default (1 for the 1-4-4-1 regressions, about 3x faster than 2 threads on a 2-core
    machine; the caller's setting for digits-cnn). The caller's setting is restored.
    """
    from deepscope.data import load_dataset
    from deepscope.landscape.dss import LEVELS
    from deepscope.nets import complete_arch_spec
    from deepscope.sweep.engines import check_engine, ray_session
    from deepscope.workflows import fit_arch_to_data

    if task not in TASKS:
        raise unknown_name("task", task, TASKS)
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ConfigError(f"pairs must be an integer >= 1, got {pairs!r}")
    _check_dss_options(alpha, tol, grid, bead, max_depth)
    n_workers = check_engine(engine, workers, address, threads=threads)
    spec = TASKS[task]
    if level not in LEVELS:
        raise unknown_name("level", level, LEVELS)
    if level == "test_error" and "test_error_thresholds" not in spec:
        classify = ", ".join(k for k in TASKS if "test_error_thresholds" in TASKS[k])
        raise ConfigError(f"task {task!r} is a regression: level 'test_error' needs a "
                          f"classification task ({classify})")
    levels = _thresholds(thresholds, spec["thresholds" if level == "train_loss"
                                          else "test_error_thresholds"])
    data = dict(spec["data"])
    if n_train is not None:
        data["n_train"] = int(n_train)
    dataset = load_dataset(data)
    arch = complete_arch_spec(fit_arch_to_data(spec["arch"], dataset))
    train_cfg = dict(spec["train"])
    if level == "train_loss":
        train_cfg["target_loss"] = min(levels)
    if epochs is not None:
        train_cfg["epochs"] = int(epochs)
    beads_cfg = dict(spec["bead_train"], **(bead_train or {}))

    # Tiny networks run several times faster on one torch thread (no thread start-up and
    # spin-waiting per op); the caller's setting is restored afterwards.
    if threads is None:
        threads = spec.get("threads")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(task, level, levels, pairs, dataset, arch, train_cfg, beads_cfg, seed,
                    alpha, tol, grid, bead, max_depth, engine, workers, threads, address,
                    n_workers, with_counterexample, progress, ray_session)
    finally:
        torch.set_num_threads(before)


def _run(task, level, levels, pairs, dataset, arch, train_cfg, beads_cfg, seed, alpha, tol,
         grid, bead, max_depth, engine, workers, threads, address, n_workers,
         with_counterexample, progress, ray_session) -> Result:
    from deepscope._progress import progress_bar
    from deepscope.landscape.connect import connect
    from deepscope.nets import build_model
    from deepscope.train import TrainConfig, train as train_fn

    seeds = [seed + k for k in range(2 * pairs)]
    snaps: dict[int, dict[float, torch.nn.Module]] = {}
    for s in progress_bar(seeds, enabled=progress, desc="train seeds"):
        snap = _Snapshots(levels, level)
        model = build_model(arch, seed=s)
        train_fn(model, dataset, TrainConfig.from_dict(dict(train_cfg, seed=s)),
                 callbacks=[snap.callback], progress=False)
        snaps[s] = snap.models

    not_reached: dict[str, list[int]] = {}
    jobs = []
    for L0 in levels:
        have = [s for s in seeds if L0 in snaps[s]]
        not_reached[str(L0)] = [s for s in seeds if L0 not in snaps[s]]
        for k in range(len(have) // 2):
            jobs.append((L0, k, have[2 * k], have[2 * k + 1]))
    from contextlib import nullcontext
    session = ray_session(address, n_workers) if engine == "ray" else nullcontext()
    with session:  # one Ray session for every pair (connect reuses a running one)
        rows = _connect_pairs(jobs, snaps, dataset, task, connect, progress_bar, progress,
                              dict(level=level, alpha=alpha, tol=tol, grid=grid, bead=bead,
                                   max_depth=max_depth, bead_train=beads_cfg, engine=engine,
                                   workers=workers, threads=threads, address=address),
                              seed)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return _finish(table, levels, task, not_reached, with_counterexample, seed, {
        "task": task, "level": level, "thresholds": levels, "pairs": pairs, "alpha": alpha,
        "tol": tol,
        "grid": grid, "bead": bead, "max_depth": max_depth, "bead_train": beads_cfg,
        "train": train_cfg, "data": dataset.spec, "arch": arch, "engine": engine,
        "threads": threads, "seed": seed})


def _connect_pairs(jobs, snaps, dataset, task, connect, progress_bar, progress, kw, seed):
    rows = []
    for L0, k, sa, sb in progress_bar(jobs, enabled=progress, desc="dss pairs"):
        t0 = time.perf_counter()
        r = connect(snaps[sa][L0], snaps[sb][L0], dataset, "dss", L0, seed=seed + k,
                    progress=False, **kw)
        s = r.summary
        rows.append({"task": task, "threshold": L0, "pair": k, "seed_a": sa, "seed_b": sb,
                     "level_a": s["level_a"], "level_b": s["level_b"],
                     "connected": s["connected"], "normalized_length": s["normalized_length"],
                     "num_beads": s["num_beads"], "depth": s["depth"],
                     "max_level": s["max_level"],
                     "beads_short_of_alpha": s["beads_short_of_alpha"],
                     "time_s": time.perf_counter() - t0})
    return rows


def _finish(table, levels, task, not_reached, with_counterexample, seed, settings) -> Result:
    by = []
    for L0 in levels:
        sub = table[table["threshold"] == L0]
        yes = sub[sub["connected"] == "yes"]
        by.append({"threshold": L0, "pairs": int(len(sub)),
                   "connected_yes": int(len(yes)),
                   "mean_length": float(yes["normalized_length"].mean()) if len(yes)
                   else None,
                   "mean_beads": float(yes["num_beads"].mean()) if len(yes) else None})
    summary: dict[str, Any] = {"task": task, "by_threshold": by, "not_reached": not_reached,
                               "reference": _REFERENCE}
    if len(by) >= 2:
        ok = [b for b in by if b["mean_length"] is not None]
        if len(ok) >= 2:
            summary["spearman_length_vs_threshold"] = float(pd.Series(
                [b["threshold"] for b in ok]).corr(pd.Series([b["mean_length"] for b in ok]),
                                                   method="spearman"))
    if with_counterexample:
        cx = counterexample(seed=seed, progress=False)
        summary["counterexample"] = {k: cx.summary[k] for k in (
            "connected", "stop_reason", "threshold", "max_level", "num_beads",
            "beads_short_of_alpha", "depth")}
        summary["counterexample"]["linear"] = cx.settings.get("linear_verdict")
    return Result("level_sets", table, summary=summary, settings=settings)


# ----------------------------------------------------------------------------- counterexample

def swap_hidden_units(model: torch.nn.Module, i: int, j: int, *, layer: str = "fc1",
                      next_layer: str = "out") -> torch.nn.Module:
    """A NEW model computing the same function: hidden units i and j of ``layer`` swapped
    (rows of its weight and bias, columns of ``next_layer``'s weight)."""
    out = copy.deepcopy(model)
    lin, nxt = getattr(out, layer), getattr(out, next_layer)
    perm = list(range(lin.weight.shape[0]))
    perm[i], perm[j] = perm[j], perm[i]
    with torch.no_grad():
        lin.weight.copy_(lin.weight[perm])
        if lin.bias is not None:
            lin.bias.copy_(lin.bias[perm])
        nxt.weight.copy_(nxt.weight[:, perm])
    return out


def counterexample_pair(n: int = 256, seed: int = 0):
    """The 2-3-2 ReLU net θ (fixed weights), its data (x ~ N(0, I), y = f_θ(x): loss 0) and
    the copy with hidden units 0 and 1 swapped. Returns ``(model, swapped, (x, y))``."""
    from deepscope.nets import build_model
    model = build_model({"arch": "mlp", "widths": [3], "input_shape": [2],
                         "num_outputs": 2, "activation": "relu"}, seed=0).eval()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.fc1.bias.zero_()
        model.out.weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]]))
        model.out.bias.zero_()
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
        y = model(x)
    return model, swap_hidden_units(model, 0, 1), (x, y)


def counterexample(threshold: float = 0.01, *, max_depth: int = 3, max_steps: int = 1000,
                   seed: int = 0, progress: bool = True):
    """DSS between the counterexample pair (see the module docstring) -> ConnectResult.

    ``settings["linear_verdict"]`` adds the straight segment's verdict ("no")."""
    from deepscope.landscape.connect import connect
    a, b, data = counterexample_pair(seed=seed)
    r = connect(a, b, data, "dss", threshold, max_depth=max_depth,
                bead_train={"optimizer": "adam", "lr": 0.01, "max_steps": max_steps},
                seed=seed, progress=progress)
    lin = connect(a, b, data, "linear", threshold, progress=False)
    r.settings["linear_verdict"] = lin.summary["connected"]
    return r
