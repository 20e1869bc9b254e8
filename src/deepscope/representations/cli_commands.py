"""CLI sub-commands of deepscope.representations (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope gdv run.safetensors --max-per-class 100 --out gdv/
    deepscope gdv run.safetensors --layers fc1 --layers re:act --split test --format json
    deepscope cka run.safetensors --unbiased --out cka/
    deepscope cka a.safetensors b.safetensors --max-samples 1000 --format csv
    deepscope experiment gdv-depth --zoo zoo-gdv --depths 1,2,4,8 --out gdv-depth/
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deepscope._cli_common import emit, print_table
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["COMMANDS", "EXPERIMENTS"]


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return vals


def _positive_list(text: str) -> list[int]:
    vals = _int_list(text)
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="which split of the checkpoint's dataset (default train)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random subset")
    p.add_argument("--batch-size", type=_positive_int, default=512,
                   help="samples per forward pass (default 512)")
    p.add_argument("--device", help="cpu, cuda, ... (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")


# --------------------------------------------------------------------------- gdv

def _add_gdv(sub) -> None:
    p = sub.add_parser("gdv", help="Generalized Discrimination Value per layer (Schilling et "
                                   "al.): how well each layer separates the classes")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("--layers", action="append", default=None,
                   help="module name, NAME:input, 're:REGEX', a class name, 'leaves' or "
                        "'children' (repeatable; default: every hidden block and the output)")
    p.add_argument("--max-per-class", type=_positive_int, default=None,
                   help="random subset of at most N points per class (default all)")
    p.add_argument("--no-input", dest="include_input", action="store_false",
                   help="leave out the raw-input row")
    _add_common(p)
    p.add_argument("--out", type=Path, default=None,
                   help="write gdv.csv, gdv.json and gdv_by_layer.png here")
    p.set_defaults(func=_cmd_gdv)


def _layers_arg(values):
    if values is None:
        return None
    if len(values) == 1 and values[0] in ("leaves", "children"):
        return values[0]
    return list(values)


def _cmd_gdv(args) -> int:
    from deepscope.representations.gdv import gdv
    from deepscope.train.checkpoint import load_checkpoint
    ck = load_checkpoint(args.checkpoint)
    res = gdv(ck.model, ck.dataset(), _layers_arg(args.layers), split=args.split,
              max_per_class=args.max_per_class, seed=args.seed,
              include_input=args.include_input, batch_size=args.batch_size,
              device=args.device, progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.representations import save_gdv
        save_gdv(res, args.out)
    return emit(res, args.format)


# --------------------------------------------------------------------------- cka

def _add_cka(sub) -> None:
    p = sub.add_parser("cka", help="linear CKA (Kornblith et al. 2019) between the layers of "
                                   "one checkpoint, or between two checkpoints")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("checkpoint_b", type=Path, nargs="?", default=None,
                   help="a second checkpoint fed the same inputs (default: the first)")
    p.add_argument("--unbiased", action="store_true",
                   help="unbiased HSIC estimator (Song et al. 2012) instead of the biased one")
    p.add_argument("--layers", action="append", default=None,
                   help="layers of the first model (repeatable; default: its hidden blocks "
                        "and output)")
    p.add_argument("--layers-b", action="append", default=None,
                   help="layers of the second model (default: as --layers)")
    p.add_argument("--max-samples", type=_positive_int, default=2048,
                   help="random subset of at most N inputs (default 2048)")
    p.add_argument("--include-input", action="store_true", help="add the raw inputs as a layer")
    _add_common(p)
    p.add_argument("--out", type=Path, default=None,
                   help="write cka.csv, cka_matrix.csv, cka.json and cka.png here")
    p.set_defaults(func=_cmd_cka)


def _cmd_cka(args) -> int:
    from deepscope.representations.cka import cka
    from deepscope.train.checkpoint import load_checkpoint
    ck = load_checkpoint(args.checkpoint)
    model_b = None
    if args.checkpoint_b is not None:
        model_b = load_checkpoint(args.checkpoint_b).model
    layers_a = _layers_arg(args.layers)
    layers_b = _layers_arg(args.layers_b)
    if layers_b is None and model_b is not None:
        layers_b = layers_a
    res = cka(ck.model, ck.dataset(), model_b, layers_a, layers_b, unbiased=args.unbiased,
              split=args.split, max_samples=args.max_samples, seed=args.seed,
              include_input=args.include_input, batch_size=args.batch_size,
              device=args.device, progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.representations import save_cka
        save_cka(res, args.out)
    emit(res, args.format, table=res.matrix, index=True)
    if args.format == "table":
        notes = res.table[res.table["note"] != ""]
        for _, r in notes.drop_duplicates("note").iterrows():
            print(f"NaN: {r['note']}")
    return 0


# --------------------------------------------------------------------------- experiment

def _add_gdv_depth(exp) -> None:
    from deepscope.sweep.cli_commands import _add_engine
    p = exp.add_parser("gdv-depth", help="Schilling et al.: GDV per layer of nets of growing "
                                         "depth; where does it stop improving?")
    p.add_argument("--zoo", type=Path, default=Path("zoo-gdv-depth"),
                   help="zoo directory (resumable; default zoo-gdv-depth)")
    p.add_argument("--depths", type=_positive_list, default=[1, 2, 4, 8, 12, 16],
                   help="numbers of hidden layers (default 1,2,4,8,12,16)")
    p.add_argument("--width", type=_positive_int, default=64, help="MLP width (default 64)")
    p.add_argument("--seeds", type=_int_list, default=[0])
    p.add_argument("--cnn", action="store_true", help="also train the MiniAlexNet CNN")
    p.add_argument("--cnn-width", type=float, default=0.25)
    p.add_argument("--dataset", choices=("digits", "mnist1d", "gaussian-mixture"),
                   default="digits")
    p.add_argument("--n-train", type=_positive_int, default=None)
    p.add_argument("--epochs", type=_positive_int, default=15)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--max-per-class", type=_positive_int, default=100,
                   help="points per class for the GDV (default 100)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    _add_engine(p)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write gdv_depth.csv, gdv_depth_nets.csv, gdv_depth.json and "
                        "gdv_depth.png here")
    p.set_defaults(func=_cmd_gdv_depth)


def _cmd_gdv_depth(args) -> int:
    from deepscope.experiments.gdv_depth import gdv_depth_study, nets_table
    res = gdv_depth_study(args.zoo, depths=args.depths, width=args.width, seeds=args.seeds,
                          include_cnn=args.cnn, cnn_width=args.cnn_width,
                          dataset=args.dataset, n_train=args.n_train, epochs=args.epochs,
                          lr=args.lr, momentum=args.momentum, batch_size=args.batch_size,
                          max_per_class=args.max_per_class, split=args.split,
                          engine=args.engine, workers=args.workers, address=args.address,
                          task_cpus=args.task_cpus, task_gpus=args.task_gpus,
                          threads=args.threads, progress=not args.quiet)
    nets = nets_table(res)
    if args.out is not None:
        from deepscope.report.html import figure_png
        from deepscope.report.representations import plot_gdv_depth
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "gdv_depth.csv")
        nets.to_csv(args.out / "gdv_depth_nets.csv", index=False)
        res.to_json(args.out / "gdv_depth.json")
        (args.out / "gdv_depth.png").write_bytes(figure_png(plot_gdv_depth(res)))
    if args.format != "table":
        return emit(res, args.format)
    wide = res.table.pivot_table(index="index", columns="net", values="gdv", aggfunc="mean",
                                 sort=False)
    print("GDV per layer (rows: layer index, 0 = input; mean over seeds):")
    print_table(wide, index=True)
    print("\nper net:")
    if len(nets):
        print_table(nets)
    else:
        print("(no finished runs)")
    s = res.summary
    print(f"\nbest output-layer GDV at depth {s['best_depth']} "
          f"({s['best_output_gdv']:.4g}); output GDV stops improving at depth "
          f"{s['stops_improving_at_depth']}; runs {s['runs']}, trained now "
          f"{s['trained_now']}, failed {s['failed']}")
    return 0


COMMANDS: list = [_add_gdv, _add_cka]
EXPERIMENTS: list = [_add_gdv_depth]
