"""CLI sub-commands of deepscope.landscape (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope interpolate a.safetensors b.safetensors --steps 25 --align --out interp/
    deepscope interpolate a.safetensors b.safetensors --bn keep --format csv
    deepscope align a.safetensors b.safetensors -o b_aligned.safetensors
"""
from __future__ import annotations

import json
from pathlib import Path

from deepscope._cli_common import emit, print_summary, print_table
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["COMMANDS", "EXPERIMENTS"]


def _barrier_keys(res) -> list[str]:
    return [k for k in res.summary if k.startswith("barrier_") and not k.endswith("_t")]


# --------------------------------------------------------------------------- interpolate

def _add_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="loss and error along the straight line between two "
                                           "checkpoints, with the loss barrier")
    p.add_argument("a", type=Path, help="first checkpoint (.safetensors); its dataset is used")
    p.add_argument("b", type=Path, help="second checkpoint, same architecture")
    p.add_argument("--steps", type=_positive_int, default=25,
                   help="points in linspace(0, 1, steps) (default 25)")
    p.add_argument("--align", action="store_true",
                   help="also interpolate to b permuted to match a (weight matching)")
    p.add_argument("--bn", choices=("recompute", "keep"), default="recompute",
                   help="BatchNorm statistics: re-estimated at every point (default) or "
                        "interpolated linearly (naive, wrong)")
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="evaluate each split on a random subset of this size")
    p.add_argument("--bn-samples", type=_positive_int, default=None,
                   help="training samples to re-estimate BatchNorm statistics (default all)")
    p.add_argument("--batch-size", type=_positive_int, default=1024)
    p.add_argument("--max-iter", type=_positive_int, default=100,
                   help="weight matching rounds with --align (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write interpolation.csv/.json (and _aligned, align.json) and "
                        "interpolation.png here")
    p.set_defaults(func=_cmd_interpolate)


def _cmd_interpolate(args) -> int:
    import pandas as pd
    from deepscope.landscape.interpolate import interpolate
    from deepscope.train.checkpoint import load_checkpoint
    if args.steps < 2:
        from deepscope.errors import ConfigError
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    ck_a, ck_b = load_checkpoint(args.a), load_checkpoint(args.b)
    data = ck_a.dataset()
    opts = dict(steps=args.steps, bn=args.bn, loss=ck_a.loss_name, batch_size=args.batch_size,
                max_samples=args.max_samples, bn_samples=args.bn_samples,
                progress=not args.quiet, seed=args.seed)
    raw = interpolate(ck_a.model, ck_b.model, data, **opts)
    raw.settings.update(a=str(args.a), b=str(args.b))
    aligned = al = None
    if args.align:
        from deepscope.landscape.align import align
        al = align(ck_a.model, ck_b.model, max_iter=args.max_iter, seed=args.seed)
        aligned = interpolate(ck_a.model, al.model, data, **opts)
        aligned.settings.update(a=str(args.a), b=f"{args.b} (aligned)")
    if args.out is not None:
        from deepscope.report.html import figure_png
        from deepscope.report.landscape_paths import plot_interpolation
        args.out.mkdir(parents=True, exist_ok=True)
        raw.to_csv(args.out / "interpolation.csv")
        raw.to_json(args.out / "interpolation.json")
        if aligned is not None:
            aligned.to_csv(args.out / "interpolation_aligned.csv")
            aligned.to_json(args.out / "interpolation_aligned.json")
            (args.out / "align.json").write_text(al.to_json())
        (args.out / "interpolation.png").write_bytes(
            figure_png(plot_interpolation(raw, aligned)))
    if args.format == "json":
        doc = {"interpolation": raw.to_dict()}
        if aligned is not None:
            doc.update(aligned=aligned.to_dict(), align=al.to_dict())
        print(json.dumps(doc, indent=2))
        return 0
    if args.format == "csv":
        frames = [raw.table.assign(curve="raw")]
        if aligned is not None:
            frames.append(aligned.table.assign(curve="aligned"))
        table = pd.concat(frames, ignore_index=True)
        print(table[["curve", *raw.table.columns]].to_csv(index=False), end="")
        return 0
    emit(raw, "table", keys=[*_barrier_keys(raw), "distance", "loss", "bn"])
    if aligned is not None:
        print("\naligned (b permuted to match a by weight matching):")
        print_table(aligned.table)
        print()
        print_summary(al.summary, keys=["rounds", "converged", "distance_before",
                                        "distance_after", "fraction_moved"])
        print_summary(aligned.summary, keys=_barrier_keys(aligned))
    return 0


# --------------------------------------------------------------------------- align

def _add_align(sub) -> None:
    p = sub.add_parser("align", help="permute b's hidden units to match a (Git Re-Basin "
                                     "weight matching) and write the aligned checkpoint")
    p.add_argument("a", type=Path, help="reference checkpoint")
    p.add_argument("b", type=Path, help="checkpoint to permute (same architecture)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="aligned checkpoint to write (b's metadata, permuted weights)")
    p.add_argument("--max-iter", type=_positive_int, default=100,
                   help="at most this many rounds (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=_positive_int, default=11,
                   help="interpolation points for the barrier before/after (default 11)")
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="evaluate the barrier on a random subset of this size")
    p.add_argument("--no-barrier", action="store_true",
                   help="skip the barrier before/after (needs a's dataset otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_align)


def _cmd_align(args) -> int:
    from deepscope.landscape.align import align
    from deepscope.train.checkpoint import load_checkpoint, save_checkpoint
    if not args.no_barrier and args.steps < 2:  # before anything is written
        from deepscope.errors import ConfigError
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    ck_a, ck_b = load_checkpoint(args.a), load_checkpoint(args.b)
    res = align(ck_a.model, ck_b.model, max_iter=args.max_iter, seed=args.seed,
                progress=not args.quiet)
    init = res.permute(ck_b.init_params) if ck_b.init_params is not None else None
    save_checkpoint(args.output, res.model, arch=ck_b.arch, dataset=ck_b.dataset_spec,
                    train=ck_b.train_config, seed=ck_b.seed, metrics=ck_b.metrics,
                    init_params=init)
    barriers = {}
    if not args.no_barrier and ck_a.dataset_spec is not None:
        from deepscope.landscape.interpolate import interpolate
        data = ck_a.dataset()
        opts = dict(steps=args.steps, loss=ck_a.loss_name, max_samples=args.max_samples,
                    progress=not args.quiet, seed=args.seed)
        before = interpolate(ck_a.model, ck_b.model, data, **opts)
        after = interpolate(ck_a.model, res.model, data, **opts)
        barriers = {k: {"before": before.summary[k], "after": after.summary[k]}
                    for k in _barrier_keys(before)}
    if args.format == "json":
        print(json.dumps({"output": str(args.output), "align": res.to_dict(),
                          "barriers": barriers}, indent=2))
        return 0
    print(f"wrote {args.output}")
    print_summary(res.summary, skip=("time_s",))
    for k, v in barriers.items():
        print(f"{k}: {v['before']:.6g} -> {v['after']:.6g}")
    return 0


COMMANDS: list = [_add_interpolate, _add_align]
EXPERIMENTS: list = []
