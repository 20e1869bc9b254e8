"""CLI sub-commands of deepscope.landscape (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope connect a.safetensors b.safetensors --method dss --threshold 0.05 --out conn/
    deepscope connect a.safetensors b.safetensors --method linear --threshold 0.05
    deepscope experiment level-sets --task quadratic --thresholds 0.03,0.01 --out ls/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepscope._cli_common import emit, print_table
from deepscope._cli_common import positive_float as _positive_float
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["COMMANDS", "EXPERIMENTS"]

_TABLE_COLUMNS = ("position", "segment", "t", "level", "loss", "error", "bead")
_SUMMARY_KEYS = ("method", "level", "threshold", "connected", "normalized_length",
                 "num_beads", "depth", "max_level", "max_loss", "max_error", "level_a",
                 "level_b", "distance", "beads_trained", "beads_short_of_alpha", "stop_reason")


def _floats(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not vals or any(not v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return vals


def _add_engine(p) -> None:
    from deepscope.sweep.engines import ENGINES
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="train the beads of one DSS depth in turn (local) or in parallel "
                        "(process, ray); default local")
    g.add_argument("--workers", type=_positive_int, default=None)
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads per bead task")
    g.add_argument("--address", default=None,
                   help="Ray cluster to connect to (default: start a local one)")


def _add_output(p) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write the table (csv), the result (json) and the figure (png) here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------- connect

def _add_connect(sub) -> None:
    p = sub.add_parser("connect", help="are two solutions connected inside a level set? "
                                       "(dynamic string sampling, Bezier / polygonal curves)")
    p.add_argument("a", type=Path, help="first checkpoint (its dataset is used)")
    p.add_argument("b", type=Path, help="second checkpoint (same architecture)")
    p.add_argument("--method", choices=("dss", "bezier", "polychain", "linear"),
                   default="dss")
    p.add_argument("--threshold", type=_positive_float, required=True,
                   help="L0: the level set is {level <= L0}")
    p.add_argument("--level", choices=("train_loss", "test_error"), default="train_loss")
    p.add_argument("--alpha", type=_positive_float, default=0.95,
                   help="beads are trained below alpha*L0 (default 0.95)")
    p.add_argument("--tol", type=float, default=0.0,
                   help="a segment passes when max <= L0*(1+tol) (default 0)")
    p.add_argument("--grid", type=_positive_int, default=20, help="points per segment")
    p.add_argument("--bead", choices=("max", "midpoint"), default="max")
    p.add_argument("--max-depth", type=int, default=10)
    p.add_argument("--points", type=_positive_int, default=61,
                   help="evaluation points along a curve (default 61)")
    b = p.add_argument_group("bead / bend training")
    b.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    b.add_argument("--lr", type=_positive_float, default=1e-3)
    b.add_argument("--momentum", type=float, default=0.0)
    b.add_argument("--max-steps", type=int, default=2000)
    b.add_argument("--batch-size", type=_positive_int, default=None,
                   help="mini-batch size (default: full batch)")
    b.add_argument("--max-samples", type=_positive_int, default=None,
                   help="evaluate on a seeded subset of each split")
    _add_engine(p)
    p.add_argument("--seed", type=int, default=0)
    _add_output(p)
    p.set_defaults(func=_cmd_connect)


def _cmd_connect(args) -> int:
    from deepscope.landscape.connect import connect
    res = connect(args.a, args.b, None, args.method, args.threshold, level=args.level,
                  alpha=args.alpha, tol=args.tol, grid=args.grid, bead=args.bead,
                  max_depth=args.max_depth, points=args.points,
                  bead_train={"optimizer": args.optimizer, "lr": args.lr,
                              "momentum": args.momentum, "max_steps": args.max_steps,
                              "batch_size": args.batch_size},
                  engine=args.engine, workers=args.workers, threads=args.threads,
                  address=args.address, max_samples=args.max_samples, seed=args.seed,
                  progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.html import figure_png
        from deepscope.report.landscape_connect import plot_connection
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "connect.csv")
        res.to_json(args.out / "connect.json")
        (args.out / "connect.png").write_bytes(figure_png(plot_connection(res)))
    return emit(res, args.format, table=res.table[list(_TABLE_COLUMNS)], keys=_SUMMARY_KEYS)


# --------------------------------------------------------------------------- level-sets

def _add_level_sets(exp) -> None:
    from deepscope.experiments.level_sets import TASKS
    p = exp.add_parser("level-sets", help="Freeman & Bruna: geodesic length of DSS paths "
                                          "against the level L0, and the counterexample")
    p.add_argument("--task", choices=tuple(TASKS), default="quadratic")
    p.add_argument("--thresholds", type=_floats, default=None,
                   help="comma-separated L0 values (default: the task's)")
    p.add_argument("--level", choices=("train_loss", "test_error"), default="train_loss",
                   help="test_error: classification tasks (digits-cnn) only")
    p.add_argument("--pairs", type=_positive_int, default=3, help="model pairs per level")
    p.add_argument("--alpha", type=_positive_float, default=0.95)
    p.add_argument("--tol", type=float, default=0.0)
    p.add_argument("--grid", type=_positive_int, default=20)
    p.add_argument("--bead", choices=("max", "midpoint"), default="max")
    p.add_argument("--max-depth", type=int, default=10)
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epoch cap per seed (default: the task's)")
    p.add_argument("--max-steps", type=_positive_int, default=None,
                   help="bead training step budget (default: the task's)")
    p.add_argument("--n-train", type=_positive_int, default=None)
    p.add_argument("--no-counterexample", dest="counterexample", action="store_false")
    _add_engine(p)
    p.add_argument("--seed", type=int, default=0)
    _add_output(p)
    p.set_defaults(func=_cmd_level_sets)


def _cmd_level_sets(args) -> int:
    from deepscope.experiments.level_sets import level_set_study
    res = level_set_study(args.task, thresholds=args.thresholds, level=args.level,
                          pairs=args.pairs,
                          alpha=args.alpha, tol=args.tol, grid=args.grid, bead=args.bead,
                          max_depth=args.max_depth,
                          bead_train=({"max_steps": args.max_steps}
                                      if args.max_steps is not None else None),
                          epochs=args.epochs, n_train=args.n_train,
                          with_counterexample=args.counterexample, engine=args.engine,
                          workers=args.workers, threads=args.threads, address=args.address,
                          seed=args.seed,
                          progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.html import figure_png
        from deepscope.report.landscape_connect import plot_level_sets
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "level_sets.csv")
        res.to_json(args.out / "level_sets.json")
        (args.out / "level_sets.png").write_bytes(figure_png(plot_level_sets(res)))
    if args.format != "table":
        return emit(res, args.format)
    import pandas as pd
    print_table(res.table)
    print("\nper threshold:")
    print_table(pd.DataFrame(res.summary["by_threshold"]))
    print()
    for k in ("spearman_length_vs_threshold", "not_reached", "counterexample", "reference"):
        if k in res.summary:
            print(f"{k}: {json.dumps(res.summary[k], default=str)}")
    return 0


COMMANDS: list = [_add_connect]
EXPERIMENTS: list = [_add_level_sets]
