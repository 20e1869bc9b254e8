"""The ``deepscope surface`` sub-command: argument parsing and printing only.

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope surface run.safetensors --dims 1 --steps 51 --span 1
    deepscope surface run.safetensors --dims 2 --steps 25 --max-samples 2000 --out surf/
    deepscope surface run.safetensors --directions pca-trajectory \\
        --trajectory ep1.safetensors ep2.safetensors ep3.safetensors --out surf/
    deepscope surface run.safetensors --resume surf/resume.json   # continue an interrupted grid
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deepscope._cli_common import emit
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["_add_surface", "_cmd_surface", "COMMANDS", "EXPERIMENTS"]


def _steps(text: str) -> int | tuple[int, int]:
    parts = [t for t in text.replace("x", ",").split(",") if t.strip()]
    try:
        vals = [int(t) for t in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or any(v < 2 for v in vals):
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 or SX,SY, got {text!r}")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


def _span(text: str):
    """S (range [-S, S]), LO:HI, or LO:HI,LO:HI (one range per axis)."""
    def one(t: str):
        if ":" in t:
            lo, hi = t.split(":", 1)
            return (float(lo), float(hi))
        return float(t)
    try:
        parts = [one(t) for t in text.split(",") if t.strip()]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and all(isinstance(p, tuple) for p in parts):
        return parts
    raise argparse.ArgumentTypeError(f"expected S, LO:HI or LO:HI,LO:HI, got {text!r}")


def _add_surface(sub) -> None:
    p = sub.add_parser("surface", help="loss on a 1-D line or 2-D plane of random "
                                       "filter-normalized (or trajectory PCA) directions")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("--dims", type=int, choices=(1, 2), default=2)
    p.add_argument("--steps", type=_steps, default=25,
                   help="grid points per axis, or SX,SY (default 25)")
    p.add_argument("--span", type=_span, default=None,
                   help="S for [-S, S], LO:HI, or LO:HI,LO:HI (default 1; pca: the "
                        "trajectory's extent)")
    p.add_argument("--directions", choices=("filter-normalized", "pca-trajectory", "hessian"),
                   default="filter-normalized")
    p.add_argument("--trajectory", type=Path, nargs="+", default=None,
                   help="checkpoints along training (for --directions pca-trajectory)")
    p.add_argument("--split", default="train", help="data split to evaluate (default train)")
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="random subset of the split (default all)")
    p.add_argument("--batch-size", type=_positive_int, default=4096)
    p.add_argument("--points-per-batch", type=_positive_int, default=None,
                   help="grid points per vmapped call (default from a memory budget)")
    p.add_argument("--bn", choices=("keep", "recompute"), default="keep",
                   help="BatchNorm: the model's running stats, or re-estimated per point")
    p.add_argument("--include-bias", action="store_true",
                   help="also move biases / 1-D parameters (zero by default)")
    p.add_argument("--include-bn", action="store_true", help="also move BatchNorm parameters")
    p.add_argument("--engine", choices=("auto", "vmap", "loop", "sequential"), default="auto")
    p.add_argument("--resume", type=Path, default=None,
                   help="JSON file keeping finished grid points; a rerun computes the rest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, ... (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write surface.csv, surface.json, directions.safetensors and PNG "
                        "figures here")
    p.set_defaults(func=_cmd_surface)


def _write_out(res, out: Path) -> None:
    from deepscope.report.html import figure_png
    from deepscope.report.landscape_surface import surface_figures
    res.save(out)
    names = {"loss along a 1-D slice": "line.png", "loss contours on a 2-D slice":
             "contour.png", "loss surface": "surface3d.png",
             "training trajectory on the PCA plane": "trajectory.png"}
    for caption, fig in surface_figures(res):
        (out / names.get(caption, "figure.png")).write_bytes(figure_png(fig))


def _cmd_surface(args) -> int:
    from deepscope.errors import ConfigError
    from deepscope.landscape.surface import surface
    from deepscope.train.checkpoint import load_checkpoint
    if args.trajectory and args.directions != "pca-trajectory":
        raise ConfigError("--trajectory is only used with --directions pca-trajectory")
    if args.directions == "pca-trajectory" and not args.trajectory:
        raise ConfigError("--directions pca-trajectory needs --trajectory CKPT [CKPT ...]")
    ckpt = load_checkpoint(args.checkpoint)
    span = args.span
    if isinstance(span, list) and args.dims != 2:
        raise ConfigError(f"--span with one range per axis needs --dims 2, got --dims "
                          f"{args.dims}")
    if isinstance(args.steps, tuple) and args.dims != 2:
        raise ConfigError(f"--steps SX,SY needs --dims 2, got --dims {args.dims}")
    res = surface(ckpt.model, ckpt.dataset(), dims=args.dims, steps=args.steps, span=span,
                  directions=args.directions,
                  trajectory=[str(p) for p in args.trajectory] if args.trajectory else None,
                  split=args.split, loss=ckpt.loss_name, batch_size=args.batch_size,
                  max_samples=args.max_samples, points_per_batch=args.points_per_batch,
                  bn=args.bn, include_bias=args.include_bias, include_bn=args.include_bn,
                  resume=args.resume, seed=args.seed, device=args.device, engine=args.engine,
                  progress=not args.quiet)
    if args.out is not None:
        _write_out(res, args.out)
    return emit(res, args.format, skip=("trajectory_coords",), max_rows=2000)


COMMANDS: list = [_add_surface]
EXPERIMENTS: list = []
