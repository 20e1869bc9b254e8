"""CLI sub-commands of deepscope.realization (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope realization a.safetensors b.safetensors --domain=-2,2 --samples 4096
    deepscope realization a.safetensors b.safetensors --format json --out real/
    deepscope experiment inverse-stability --out inv/          # table, fit, figure
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from deepscope._cli_common import emit, print_summary, print_table
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["COMMANDS", "EXPERIMENTS"]


def _interval(text: str) -> tuple[float, float]:
    parts = [p for p in text.split(",") if p.strip()]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lo,hi (two numbers), got {text!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise argparse.ArgumentTypeError(f"expected finite lo <= hi, got {text!r}")
    return lo, hi


def _floats(low: float):
    def parse(text: str) -> list[float]:
        try:
            vals = [float(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        if not vals or any(not math.isfinite(v) or v < low for v in vals):
            raise argparse.ArgumentTypeError(f"expected numbers >= {low:g}, got {text!r}")
        return vals
    return parse


def _add_output(p: argparse.ArgumentParser, files: str) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None, help=f"write {files} here")


# --------------------------------------------------------------------------- realization

def _add_realization(sub) -> None:
    p = sub.add_parser("realization",
                       help="parameter vs realization distance of two shallow ReLU nets "
                            "(Berner et al. 2019), with their pathologies")
    p.add_argument("a", type=Path, help="first model (deepscope checkpoint)")
    p.add_argument("b", type=Path, help="second model (deepscope checkpoint)")
    p.add_argument("--domain", type=_interval, default=None,
                   help="box lo,hi for every input, e.g. --domain=-2,2 (default: the "
                        "training inputs of A's dataset, else -1,1)")
    p.add_argument("--samples", type=_positive_int, default=4096,
                   help="grid / uniform sample size (default 4096)")
    p.add_argument("--ord", choices=("1", "2", "inf"), default="2",
                   help="norm of the parameter distances (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, ... (default: A's)")
    p.add_argument("--quiet", action="store_true",
                   help="accepted for uniformity (this probe shows no progress bar)")
    _add_output(p, "realization.csv, pathologies.csv, summary.json and realization.png")
    p.set_defaults(func=_cmd_realization)


def _load(path: Path):
    from deepscope.nets import load_model
    from deepscope.train.checkpoint import is_checkpoint, load_checkpoint
    if path.suffix == ".safetensors" and path.is_file() and is_checkpoint(path):
        ck = load_checkpoint(path)
        return ck.model, ck
    return load_model(path), None


def _cmd_realization(args) -> int:
    from deepscope.realization.probe import realization
    a, ck = _load(args.a)
    b, _ = _load(args.b)
    domain = args.domain
    if domain is None:
        domain = ck.dataset() if ck is not None and ck.dataset_spec is not None else (-1.0, 1.0)
    res = realization(a, b, domain, samples=args.samples, seed=args.seed,
                      ord=math.inf if args.ord == "inf" else int(args.ord), device=args.device)
    if args.out is not None:
        from deepscope.report.html import figure_png
        from deepscope.report.realization import plot_realization
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "realization.csv")
        res.pathologies.to_csv(args.out / "pathologies.csv", index=False)
        (args.out / "summary.json").write_text(res.to_json())
        (args.out / "realization.png").write_bytes(figure_png(plot_realization(res)))
    if args.format != "table":
        return emit(res, args.format)
    print_table(res.table)
    print()
    if len(res.pathologies):
        print("pathologies:")
        print_table(res.pathologies)
    else:
        print("pathologies: none")
    print()
    summary = dict(res.summary)
    if len(summary.get("argmax") or ()) > 4:
        summary["argmax"] = f"({len(summary['argmax'])} coordinates; see --format json)"
    print_summary(summary)
    return 0


# --------------------------------------------------------------------------- experiment

def _add_inverse_stability(exp) -> None:
    from deepscope.experiments.inverse_stability import INJECTIONS
    p = exp.add_parser("inverse-stability",
                       help="Berner et al. 2019: parameter vs realization distance of trained "
                            "shallow ReLU nets, and injected pathologies")
    p.add_argument("--bases", type=_positive_int, default=3, help="base nets (default 3)")
    p.add_argument("--width", type=_positive_int, default=16, help="hidden neurons (16)")
    p.add_argument("--input-dim", type=_positive_int, default=2)
    p.add_argument("--teacher-width", type=_positive_int, default=4)
    p.add_argument("--n-train", type=_positive_int, default=256)
    p.add_argument("--seed-pairs", type=int, default=2,
                   help="partners trained from the same init with other batch orders (2)")
    p.add_argument("--perturbations", type=_floats(0.0),
                   default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
                   help="relative perturbation sizes of the retrained partners")
    p.add_argument("--strengths", type=_floats(1.0), default=[10.0, 100.0, 1000.0],
                   help="strengths of the injected pathologies (>= 1)")
    p.add_argument("--injections", default=",".join(INJECTIONS),
                   help=f"comma-separated subset of {','.join(INJECTIONS)}")
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--domain", type=_interval, default=(-2.0, 2.0),
                   help="box lo,hi for every input, e.g. --domain=-2,2 (the default)")
    p.add_argument("--samples", type=_positive_int, default=4096)
    p.add_argument("--fit-on", choices=("sup", "sobolev"), default="sup")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_output(p, "inverse_stability.csv, inverse_stability.json and "
                   "inverse_stability.png")
    p.set_defaults(func=_cmd_inverse_stability)


def _cmd_inverse_stability(args) -> int:
    from deepscope.experiments.inverse_stability import inverse_stability_study
    injections = tuple(t.strip() for t in args.injections.split(",") if t.strip())
    res = inverse_stability_study(
        input_dim=args.input_dim, width=args.width, teacher_width=args.teacher_width,
        n_train=args.n_train, bases=args.bases, seed_pairs=args.seed_pairs,
        perturbations=args.perturbations, epochs=args.epochs,
        retrain_epochs=args.retrain_epochs, lr=args.lr, domain=args.domain,
        samples=args.samples, strengths=args.strengths, injections=injections,
        fit_on=args.fit_on, seed=args.seed, progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.html import figure_png
        from deepscope.report.realization import plot_inverse_stability
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "inverse_stability.csv")
        res.to_json(args.out / "inverse_stability.json")
        (args.out / "inverse_stability.png").write_bytes(
            figure_png(plot_inverse_stability(res)))
    if args.format != "table":
        return emit(res, args.format)
    print_table(res.table)
    s = res.summary
    print()
    for name in ("fit", "fit_sobolev", "fit_raw"):
        f = s[name]
        print(f"{name}: d_param <= {f['C']:.4g} * d_real^{f['beta']:.3f} "
              f"({f['num_points']} trained pairs; least-squares slope {f['slope_ls']:.3f})")
    for kind, f in s["fit_by_kind"].items():
        print(f"fit ({kind} pairs only): C={f['C']:.4g}, beta={f['beta']:.3f}")
    print(f"fit on: {s['fit_on']} distance; train mse {s['train_mse']:.3g}")
    for kind, d in s["injections"].items():
        print(f"{kind}: breaks the bound in {d['broken_fraction']:.0%} (raw "
              f"{d['broken_fraction_raw']:.0%}), max ratio {d['max_ratio']:.3g}, "
              f"detected: {d['all_detected']}")
    return 0


COMMANDS: list = [_add_realization]
EXPERIMENTS: list = [_add_inverse_stability]
