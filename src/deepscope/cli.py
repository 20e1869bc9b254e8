"""The ``deepscope`` command line: parse arguments, call the public API, print or write.

Exit codes: 0 ok; 1 internal error; 2 bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from deepscope.errors import ConfigError, DeepscopeError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"deepscope: error: {message} (see `{self.prog} --help`)\n")


def _ints(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="how to print the result (default: table)")
    p.add_argument("--out", type=Path, default=None, help="write tables, summary and figures here")


# --------------------------------------------------------------------------- train

def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a built-in network and write a checkpoint")
    a = p.add_argument_group("architecture")
    a.add_argument("--arch", default="mlp", help="mlp | cnn | resnet | lstm (default mlp)")
    a.add_argument("--widths", type=_ints, help="MLP hidden widths, e.g. 512,512")
    a.add_argument("--activation", help="relu | tanh | gelu")
    a.add_argument("--dropout", type=float)
    a.add_argument("--batchnorm", action="store_true", default=None)
    a.add_argument("--no-bias", dest="bias", action="store_false", default=None)
    a.add_argument("--width", type=float, help="CNN width multiplier / ResNet base width")
    a.add_argument("--blocks", type=_ints, help="ResNet blocks per stage, e.g. 2,2,2")
    a.add_argument("--hidden", type=int, help="LSTM hidden size")
    a.add_argument("--init", help="default | he | glorot | orthogonal")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits",
                   help="digits | mnist1d | teacher | polyreg | gaussian-mixture | "
                        "mnist-idx | cifar10 (default digits)")
    d.add_argument("--data-path", help="folder of the MNIST IDX / CIFAR-10 files")
    d.add_argument("--n-train", type=int)
    d.add_argument("--label-noise", type=float)
    d.add_argument("--random-labels", action="store_true", default=None)
    d.add_argument("--no-standardize", dest="standardize", action="store_false", default=None)
    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", default="sgd",
                   help="sgd | adagrad | rmsprop | adam | adamw (default sgd)")
    o.add_argument("--lr", type=float, default=0.1)
    o.add_argument("--momentum", type=float)
    o.add_argument("--nesterov", action="store_true", default=None)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--epochs", type=int, default=20)
    o.add_argument("--target-loss", type=float, help="stop once the train loss reaches this")
    o.add_argument("--schedule", help="constant | step | cosine")
    o.add_argument("--warmup-epochs", type=int)
    o.add_argument("--clip-grad-norm", type=float)
    o.add_argument("--averaging", help="none | polyak | ema")
    o.add_argument("--loss", help="cross_entropy | mse (default: by task)")
    o.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--no-init-weights", action="store_true",
                   help="do not store the initial weights in the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_train)


def _spec_from_args(args) -> tuple[dict, dict, dict]:
    arch = {"arch": args.arch}
    for key, val in (("widths", args.widths), ("activation", args.activation),
                     ("dropout", args.dropout), ("batchnorm", args.batchnorm),
                     ("bias", args.bias), ("init", args.init), ("blocks", args.blocks),
                     ("hidden", args.hidden)):
        if val is not None:
            arch[key] = val
    if args.width is not None:
        arch["width"] = args.width if args.arch == "cnn" else int(args.width)
    data = {"name": args.dataset, "seed": args.seed}
    for key, val in (("n_train", args.n_train), ("label_noise", args.label_noise),
                     ("random_labels", args.random_labels), ("standardize", args.standardize),
                     ("path", args.data_path)):
        if val is not None:
            data[key] = val
    if args.dataset in ("digits", "mnist1d", "mnist-idx") and args.arch != "mlp":
        data["flat"] = False
    train = {"optimizer": args.optimizer, "lr": args.lr, "batch_size": args.batch_size,
             "epochs": args.epochs, "seed": args.seed}
    for key, val in (("momentum", args.momentum), ("nesterov", args.nesterov),
                     ("weight_decay", args.weight_decay), ("target_loss", args.target_loss),
                     ("schedule", args.schedule), ("warmup_epochs", args.warmup_epochs),
                     ("clip_grad_norm", args.clip_grad_norm), ("averaging", args.averaging),
                     ("loss", args.loss)):
        if val is not None:
            train[key] = val
    return arch, data, train


def _cmd_train(args) -> int:
    from deepscope.workflows import train_and_save
    arch, data, train = _spec_from_args(args)
    run = train_and_save(arch, data, train, args.output, progress=not args.quiet,
                         include_init=not args.no_init_weights)
    if args.format == "json":
        print(json.dumps({"checkpoint": str(args.output), "metrics": run.metrics},
                         indent=2, default=str))
    else:
        m = run.metrics
        print(f"wrote {args.output}")
        print(", ".join(f"{k}={m[k]:.4g}" if isinstance(m.get(k), float) else f"{k}={m[k]}"
                        for k in ("epochs_run", "train_loss", "train_acc", "test_loss",
                                  "test_acc") if k in m))
    return 0


# --------------------------------------------------------------------------- info

def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show a checkpoint's specs, metrics and parameter count")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from deepscope.train.checkpoint import load_checkpoint
    ck = load_checkpoint(args.checkpoint)
    info = {"path": str(ck.path), "parameters": ck.num_parameters(), "arch": ck.arch,
            "dataset": ck.dataset_spec, "train": ck.train_config, "seed": ck.seed,
            "metrics": ck.metrics, "has_init_weights": ck.init_params is not None}
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk}={vv}" for kk, vv in v.items() if vv is not None)
        print(f"{k:<{width}}  {v}")
    return 0


# --------------------------------------------------------------------------- demo

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train a small net on digits, run every probe, write a report")
    p.add_argument("--out", type=Path, default=Path("deepscope-demo"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from deepscope.demo import run_demo
    page = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    print(f"report: {page}")
    return 0


# --------------------------------------------------------------------------- spectra

def _add_spectra(sub) -> None:
    p = sub.add_parser("spectra", help="heavy-tailed self-regularization analysis of weights")
    p.add_argument("model", type=Path, help="deepscope checkpoint, .safetensors, .pt state "
                   "dict or Hugging Face model directory")
    p.add_argument("--layers", action="append", default=None,
                   help="layer name, 're:REGEX' or type name (repeatable)")
    p.add_argument("--conv", choices=("slices", "reshape"), default="slices")
    p.add_argument("--no-conv2d-norm", dest="conv2d_norm", action="store_false",
                   help="raw Conv2d eigenvalues (default: halved, as weightwatcher)")
    p.add_argument("--min-tail", type=int, help="minimum power-law tail size")
    p.add_argument("--bootstrap", type=int, default=0,
                   help="bootstrap resamples for the alpha confidence interval")
    p.add_argument("--ci-level", type=float, default=0.9)
    p.add_argument("--truncated", action="store_true", help="also fit a truncated power law")
    p.add_argument("--randomize", action="store_true",
                   help="randomized-weights comparison (correlation traps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float64", action="store_true", help="eigenvalues in float64")
    p.add_argument("--device", help="where to compute eigenvalues (cpu, cuda, ...)")
    p.add_argument("--streaming", action="store_true",
                   help="read one tensor at a time (peak memory ~ one layer)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a whole module from a .pt file (runs its code)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_output(p)
    p.set_defaults(func=_cmd_spectra)


_SPECTRA_TABLE_COLUMNS = ("layer", "type", "N", "M", "num_evals", "lambda_max", "alpha",
                          "alpha_ci_low", "alpha_ci_high", "ks_distance", "num_tail",
                          "fit_status", "alpha_weighted", "log_norm", "stable_rank",
                          "num_spikes", "mp_softrank", "phase", "num_traps", "note")


def _cmd_spectra(args) -> int:
    import torch
    from deepscope.weights import spectra
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    res = spectra(args.model, layers=args.layers, conv=args.conv, min_tail=args.min_tail,
                  bootstrap=args.bootstrap, ci_level=args.ci_level, truncated=args.truncated,
                  randomize=args.randomize, seed=args.seed,
                  dtype=torch.float64 if args.float64 else torch.float32, device=args.device,
                  streaming=args.streaming, conv2d_norm=args.conv2d_norm,
                  trust_pickle=args.trust_pickle, progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.spectra import save_spectra
        save_spectra(res, args.out)
    cols = [c for c in _SPECTRA_TABLE_COLUMNS if c in res.table]
    _print_result(res, args.format, cols)
    return 0


def _print_result(res, fmt: str, cols=None) -> None:
    if fmt == "json":
        print(res.to_json())
    elif fmt == "csv":
        print(res.to_csv(), end="")
    else:
        import pandas as pd
        table = (res.table[list(cols)] if cols else res.table).copy()
        text_cols = table.select_dtypes(include="object").columns
        table[text_cols] = table[text_cols].fillna("-")
        with pd.option_context("display.width", 250, "display.max_columns", 60,
                               "display.max_rows", 500, "display.max_colwidth", 40,
                               "display.float_format", "{:.4g}".format):
            print(table.to_string(index=False, na_rep="-"))
        print()
        for k, v in res.summary.items():
            if isinstance(v, dict):
                v = ", ".join(f"{kk}={vv}" for kk, vv in v.items() if vv)
            elif isinstance(v, float):
                v = f"{v:.4g}"
            print(f"{k}: {v}")


# --------------------------------------------------------------------------- experiment

def _add_experiment(sub) -> None:
    from deepscope.sweep.cli_commands import _add_engine
    p = sub.add_parser("experiment", help="reproduce a result of the literature")
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=_Parser,
                           required=True)
    b = exp.add_parser("batch-size", help="Martin & Mahoney: batch size vs FC-layer spectra")
    b.add_argument("--zoo", type=Path, default=Path("zoo-batch-size"),
                   help="zoo directory (resumable; default zoo-batch-size)")
    b.add_argument("--batch-sizes", type=_ints, default=[2, 8, 32, 128, 512])
    b.add_argument("--seeds", type=_seeds, default=[0, 1])
    b.add_argument("--arch", choices=("cnn", "mlp"), default="cnn")
    b.add_argument("--width", type=float, default=0.5, help="width multiplier")
    b.add_argument("--dataset", default="digits")
    b.add_argument("--n-train", type=int)
    b.add_argument("--epochs", type=int, default=20)
    b.add_argument("--lr", type=float, default=0.01)
    b.add_argument("--momentum", type=float, default=0.0)
    _add_engine(b)
    b.add_argument("--quiet", action="store_true")
    _add_output(b)
    b.set_defaults(func=_cmd_batch_size)
    for add in _module_lists("EXPERIMENTS"):
        add(exp)


def _seeds(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return vals


def _cmd_batch_size(args) -> int:
    from deepscope.experiments.batch_size import batch_size_study, plot_batch_size_study
    res = batch_size_study(args.zoo, batch_sizes=args.batch_sizes, seeds=args.seeds,
                           arch=args.arch, width=args.width, dataset=args.dataset,
                           n_train=args.n_train, epochs=args.epochs, lr=args.lr,
                           momentum=args.momentum,
                           engine=args.engine, workers=args.workers, address=args.address,
                           task_cpus=args.task_cpus, task_gpus=args.task_gpus,
                           threads=args.threads, progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.html import figure_png
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "batch_size.csv")
        res.to_json(args.out / "batch_size.json")
        (args.out / "batch_size.png").write_bytes(figure_png(plot_batch_size_study(res)))
    if args.format == "table":
        import pandas as pd
        by = pd.DataFrame(res.summary["by_batch_size"])
        with pd.option_context("display.width", 250, "display.max_columns", 40,
                               "display.float_format", "{:.4g}".format):
            print(res.table.drop(columns=["run_id"]).to_string(index=False))
            print("\nmeans per batch size:")
            print(by.to_string(index=False))
        print("\nSpearman rank correlation with batch size: " + ", ".join(
            f"{k}={v:+.2f}" for k, v in res.summary["spearman"].items()))
    else:
        _print_result(res, args.format)
    return 0


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    from deepscope import __version__
    parser = _Parser(prog="deepscope",
                     description="Theory-backed diagnostics for trained neural networks.")
    parser.add_argument("--version", action="version", version=f"deepscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (*_COMMANDS, *_sweep_commands()):
        add(sub)
    return parser


# Sub-command modules: each defines COMMANDS (adders of top-level sub-commands) and may
# define EXPERIMENTS (adders of `deepscope experiment NAME` sub-commands).
COMMAND_MODULES = (
    "deepscope.curvature.cli_commands",
    "deepscope.sweep.cli_commands",
    "deepscope.landscape.cli_paths",
    "deepscope.landscape.cli_connect",
    "deepscope.landscape.cli_surface",
    "deepscope.generalization.cli_commands",
    "deepscope.generalization.cli_measures",
    "deepscope.representations.cli_commands",
    "deepscope.dynamics.cli_commands",
    "deepscope.realization.cli_commands",
)


def _module_lists(attr: str) -> list:
    import importlib
    out = []
    for name in COMMAND_MODULES:
        out.extend(getattr(importlib.import_module(name), attr, ()))
    return out


def _sweep_commands():
    return _module_lists("COMMANDS")


_COMMANDS = [_add_train, _add_info, _add_spectra, _add_experiment, _add_demo]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DeepscopeError as exc:
        print(f"deepscope: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError,
            PermissionError) as exc:
        print(f"deepscope: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `deepscope spectra M | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("deepscope: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal error: one line, traceback with DEEPSCOPE_DEBUG=1
        if os.environ.get("DEEPSCOPE_DEBUG"):
            raise
        print(f"deepscope: internal error: {type(exc).__name__}: {exc} "
              f"(set DEEPSCOPE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
