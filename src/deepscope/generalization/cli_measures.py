"""CLI sub-commands of deepscope.generalization measures (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope measures run.safetensors
    deepscope measures run.safetensors --which path_norm,pacbayes_flatness --format json
    deepscope measures run.safetensors --max-samples 1000 --out measures/   # csv + json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deepscope._cli_common import emit, print_table
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["_add_measures", "_cmd_measures", "COMMANDS", "EXPERIMENTS"]


def _names(text: str) -> list[str]:
    from deepscope.generalization.measures import MEASURES
    vals = [t.strip() for t in text.split(",") if t.strip()]
    bad = [v for v in vals if v not in MEASURES]
    if bad or not vals:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(MEASURES)}, got {text!r}")
    return vals


def _add_measures(sub) -> None:
    p = sub.add_parser("measures", help="generalization measures of Jiang et al. (ICLR 2020): "
                                        "margins, norms, path norm, PAC-Bayes flatness, "
                                        "sharpness, HT-SR summaries")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("--which", type=_names, default=None,
                   help="comma-separated measure names (default all)")
    p.add_argument("--no-init", action="store_true",
                   help="ignore the initial weights stored in the checkpoint")
    p.add_argument("--batch-size", type=_positive_int, default=1024)
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="random subset of the training data (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write measures.csv, layers.csv and measures.json here")
    p.set_defaults(func=_cmd_measures)


def _cmd_measures(args) -> int:
    from deepscope.generalization.measures import measures
    from deepscope.train.checkpoint import load_checkpoint
    ckpt = load_checkpoint(args.checkpoint)
    init = None if args.no_init else ckpt.init_params
    res = measures(ckpt.model, ckpt.dataset(), init_params=init, which=args.which,
                   seed=args.seed, batch_size=args.batch_size, max_samples=args.max_samples,
                   progress=not args.quiet)
    if res.table.empty:  # e.g. only margin/flatness measures asked of a regression model
        from deepscope.errors import DataError
        why = "; ".join(f"{k}: {v}" for k, v in res.settings.get("omitted", {}).items())
        raise DataError(f"none of the requested measures can be computed for this "
                        f"checkpoint ({why})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "measures.csv")
        res.layers.to_csv(args.out / "layers.csv", index=False)
        (args.out / "measures.json").write_text(res.to_json())
    if args.format != "table":
        return emit(res, args.format)
    print_table(res.table)
    omitted = res.settings.get("omitted", {})
    if omitted:
        print()
        for name, why in omitted.items():
            print(f"omitted {name}: {why}")
    return 0


COMMANDS: list = [_add_measures]
EXPERIMENTS: list = []
