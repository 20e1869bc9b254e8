"""CLI sub-commands of deepscope.generalization (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope margins run.safetensors [--layers input,fc1,fc2,out] [--out DIR]
    deepscope predict-gap ZOO_DIR [--no-measures] [--k 5] [--save-predictor P.json]
    deepscope predict-gap --predictor P.json a.safetensors b.safetensors
    deepscope experiment margin-gap [--zoo DIR] [--engine process] [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deepscope._cli_common import emit
from deepscope._cli_common import positive_int as _positive_int
from deepscope.sweep.cli_commands import _add_engine

__all__ = ["COMMANDS", "EXPERIMENTS"]


def _names(text: str) -> list[str]:
    vals = [t.strip() for t in text.split(",") if t.strip()]
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return vals


def _numbers(kind):
    def parse(text: str) -> list:
        if text.strip().lower() in ("", "none"):
            return []
        try:
            return [kind(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s (or 'none'), got {text!r}")
    return parse


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="how to print the result (default: table)")
    p.add_argument("--out", type=Path, default=None,
                   help="write tables, summary and figures here")


# ----------------------------------------------------------------------------- margins

def _add_margins(sub) -> None:
    p = sub.add_parser("margins", help="normalized margin distributions at four layers and "
                                       "their 20-feature signature (Jiang et al. 2019)")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("--layers", type=_names, default=None,
                   help="comma-separated module names ('input' for the input); default: the "
                        "input and three hidden stages")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--all-points", action="store_true",
                   help="keep misclassified points too (negative margins)")
    p.add_argument("--batch-size", type=_positive_int, default=512)
    p.add_argument("--device", help="cpu, cuda, ... (default: the model's)")
    _output_args(p)
    p.set_defaults(func=_cmd_margins)


def _cmd_margins(args) -> int:
    from deepscope.generalization.margins import margins
    from deepscope.train.checkpoint import load_checkpoint
    ckpt = load_checkpoint(args.checkpoint)
    res = margins(ckpt.model, ckpt.dataset(), layers=args.layers, split=args.split,
                  batch_size=args.batch_size, correct_only=not args.all_points,
                  device=args.device, progress=not args.quiet)
    if args.out is not None:
        import pandas as pd
        from deepscope.report.generalization import plot_margins
        from deepscope.report.html import figure_png
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "margins.csv")
        res.to_json(args.out / "margins.json")
        sig = pd.DataFrame({"feature": res.signature().index,
                            "value": res.signature().to_numpy(),
                            "log_value": res.signature(log=True).to_numpy()})
        sig.to_csv(args.out / "signature.csv", index=False)
        (args.out / "margins.png").write_bytes(figure_png(plot_margins(res)))
    emit(res, args.format, skip=("signature",))
    if args.format == "table":
        print("signature (log|.|): " + ", ".join(
            f"{k}={v:.3f}" for k, v in res.signature(log=True).items()))
    return 0


# ----------------------------------------------------------------------------- predict-gap

def _add_predict_gap(sub) -> None:
    p = sub.add_parser("predict-gap", help="fit the margin-signature regression of the "
                                           "generalization gap over a zoo and score every "
                                           "measure; or apply a saved predictor")
    p.add_argument("paths", type=Path, nargs="+",
                   help="a zoo directory; with --predictor: checkpoints")
    p.add_argument("--predictor", type=Path, default=None,
                   help="apply this saved predictor (JSON) to the given checkpoints")
    p.add_argument("--save-predictor", type=Path, default=None,
                   help="write the fitted predictor here (JSON)")
    p.add_argument("--layers", type=_names, default=None, help="margin layers (module names)")
    p.add_argument("--split", choices=("train", "test"), default=None,
                   help="margins on this split (default train)")
    p.add_argument("--no-measures", dest="measures", action="store_false",
                   help="margins only (skip the generalization measures)")
    p.add_argument("--which", type=_names, default=None,
                   help="comma-separated measures to compute (default all)")
    p.add_argument("--k", type=_positive_int, default=5, help="cross-validation folds")
    p.add_argument("--seed", type=int, default=0, help="fold seed")
    p.add_argument("--ridge", type=float, default=0.0,
                   help="ridge penalty on standardized features (default 0: least squares)")
    p.add_argument("--cmi-size", type=int, default=2,
                   help="hyper-parameters per CMI conditioning set (default 2)")
    _add_engine(p)
    _output_args(p)
    p.set_defaults(func=_cmd_predict_gap)


def _write_gap(res, out: Path, name: str) -> None:
    from deepscope.report.generalization import plot_predicted_vs_true, plot_tau
    from deepscope.report.html import figure_png
    from deepscope.sweep.table import file_cells
    out.mkdir(parents=True, exist_ok=True)
    res.to_csv(out / f"{name}.csv")
    res.to_json(out / f"{name}.json")
    file_cells(res.models).to_csv(out / f"{name}_models.csv", index=False)
    if res.predictor is not None:
        res.predictor.save(out / "predictor.json")
    color = "data.label_noise" if "data.label_noise" in res.summary.get("hyperparams", []) \
        else None
    (out / f"{name}_predicted_vs_true.png").write_bytes(
        figure_png(plot_predicted_vs_true(res, color_by=color)))
    (out / f"{name}_tau.png").write_bytes(figure_png(plot_tau(res)))


def _cmd_predict_gap(args) -> int:
    from deepscope.errors import ConfigError
    if args.predictor is not None:
        from deepscope.generalization.predict import apply_predictor
        res = apply_predictor(args.predictor, args.paths, progress=not args.quiet)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            res.to_csv(args.out / "gap_prediction.csv")
            res.to_json(args.out / "gap_prediction.json")
        return emit(res, args.format, table=res.table.drop(
            columns=[c for c in res.table.columns if c.startswith("log_")]))
    if len(args.paths) != 1:
        raise ConfigError(f"predict-gap: expected one zoo directory (or --predictor P.json "
                          f"with checkpoints), got {len(args.paths)} paths")
    from deepscope.generalization.predict import predict_gap
    mopts = {} if args.split is None else {"split": args.split}
    qopts = {} if args.which is None else {"which": args.which}
    res = predict_gap(args.paths[0], layers=args.layers, margin_options=mopts,
                      measures=args.measures, measure_options=qopts, k=args.k,
                      seed=args.seed, ridge=args.ridge, cmi_size=args.cmi_size,
                      engine=args.engine, workers=args.workers, address=args.address,
                      threads=args.threads, task_cpus=args.task_cpus,
                      task_gpus=args.task_gpus, progress=not args.quiet)
    if args.save_predictor is not None:
        res.predictor.save(args.save_predictor)
    if args.out is not None:
        _write_gap(res, args.out, "predict_gap")
    return emit(res, args.format)


# ----------------------------------------------------------------------------- experiment

def _add_margin_gap(exp) -> None:
    from deepscope.experiments.margin_gap import DEFAULTS
    p = exp.add_parser("margin-gap", help="Jiang et al.: margin signatures and generalization "
                                          "measures vs the gap over a zoo of 60 MLPs")
    p.add_argument("--zoo", type=Path, default=Path("zoo-margin-gap"),
                   help="zoo directory (resumable; default zoo-margin-gap)")
    p.add_argument("--dataset", default="digits", help="digits | mnist1d (default digits)")
    p.add_argument("--n-train", type=_positive_int, default=500)
    p.add_argument("--epochs", type=_positive_int, default=40)
    p.add_argument("--seeds", type=_numbers(int), default=[0, 1, 2, 3])
    p.add_argument("--momentum", type=float, default=0.9)
    for flag, key, kind in (("--widths", "width", int), ("--depths", "depth", int),
                            ("--lrs", "lr", float), ("--batch-sizes", "batch_size", int),
                            ("--weight-decays", "weight_decay", float),
                            ("--dropouts", "dropout", float),
                            ("--label-noises", "label_noise", float)):
        base, alts = DEFAULTS[key]
        p.add_argument(flag, type=_numbers(kind), default=None,
                       help=f"alternatives to the base {base} (default "
                            f"{','.join(map(str, alts))}; 'none' keeps it fixed)")
    p.add_argument("--no-measures", dest="measures", action="store_false",
                   help="margins only (skip the generalization measures)")
    p.add_argument("--which", type=_names, default=None,
                   help="comma-separated measures to compute (default all)")
    p.add_argument("--k", type=_positive_int, default=5, help="cross-validation folds")
    p.add_argument("--ridge", type=float, default=0.0)
    _add_engine(p)
    _output_args(p)
    p.set_defaults(func=_cmd_margin_gap)


def _cmd_margin_gap(args) -> int:
    from deepscope.errors import ConfigError
    from deepscope.experiments.margin_gap import margin_gap_study
    if not args.seeds:
        raise ConfigError("--seeds: expected at least one seed")
    res = margin_gap_study(args.zoo, dataset=args.dataset, n_train=args.n_train,
                           epochs=args.epochs, seeds=args.seeds, momentum=args.momentum,
                           widths=args.widths, depths=args.depths, lrs=args.lrs,
                           batch_sizes=args.batch_sizes, weight_decays=args.weight_decays,
                           dropouts=args.dropouts, label_noises=args.label_noises,
                           measures=args.measures,
                           measure_options=None if args.which is None
                           else {"which": args.which},
                           k=args.k, ridge=args.ridge, engine=args.engine,
                           workers=args.workers, address=args.address, threads=args.threads,
                           task_cpus=args.task_cpus, task_gpus=args.task_gpus,
                           progress=not args.quiet)
    if args.out is not None:
        _write_gap(res, args.out, "margin_gap")
    return emit(res, args.format)


COMMANDS: list = [_add_margins, _add_predict_gap]
EXPERIMENTS: list = [_add_margin_gap]
