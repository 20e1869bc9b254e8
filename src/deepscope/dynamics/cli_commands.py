"""CLI sub-commands of deepscope.dynamics (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.

    deepscope ntk run.safetensors --probe-size 64 --outputs sum --out ntk/
    deepscope ntk run.safetensors --outputs all --format json
    deepscope experiment overparam --widths 16,64,256,1024 --out overparam/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepscope._cli_common import emit
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["COMMANDS", "EXPERIMENTS"]


def _outputs(text: str):
    if text in ("sum", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'sum', 'all' or an integer logit index, "
                                         f"got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return vals


# --------------------------------------------------------------------------- ntk

def _add_ntk(sub) -> None:
    p = sub.add_parser("ntk", help="empirical neural tangent kernel of a checkpoint on probe "
                                   "inputs: spectrum, condition number")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("--probe-size", type=_positive_int, default=64,
                   help="random probe points from the data split (default 64)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--outputs", type=_outputs, default="sum",
                   help="sum (n x n trace over outputs, default), all ((n·k)x(n·k)) or a "
                        "logit index")
    p.add_argument("--method", choices=("auto", "jacobian", "ntk-vp"), default="auto")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seeds the probe subset")
    p.add_argument("--float64", action="store_true", help="compute in float64")
    p.add_argument("--device", help="cpu, cuda, ... (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write ntk.csv (eigenvalues), summary.json, gram.csv and "
                        "ntk_spectrum.png here")
    p.set_defaults(func=_cmd_ntk)


def _cmd_ntk(args) -> int:
    import numpy as np
    import torch
    from deepscope.dynamics.ntk import ntk, probe_inputs
    from deepscope.train.checkpoint import load_checkpoint
    ckpt = load_checkpoint(args.checkpoint)
    x = probe_inputs(ckpt.dataset(), max_samples=args.probe_size, seed=args.seed,
                     split=args.split)
    res = ntk(ckpt.model, x, outputs=args.outputs, batch_size=args.batch_size,
              method=args.method, device=args.device,
              dtype=torch.float64 if args.float64 else None, progress=not args.quiet)
    res.settings.update(probe_size=args.probe_size, split=args.split,
                        checkpoint=str(args.checkpoint))
    if args.out is not None:
        from deepscope.report.dynamics import plot_ntk_spectrum
        from deepscope.report.html import figure_png
        args.out.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.out / "ntk.csv")
        res.to_json(args.out / "summary.json")
        np.savetxt(args.out / "gram.csv", res.gram.double().numpy(), delimiter=",")
        (args.out / "ntk_spectrum.png").write_bytes(figure_png(plot_ntk_spectrum(res)))
    return emit(res, args.format, max_rows=60)


# --------------------------------------------------------------------------- overparam

def _add_overparam(exp) -> None:
    from deepscope.experiments.overparam import DEFAULT_WIDTHS
    p = exp.add_parser("overparam", help="Du et al.: wide two-layer ReLU nets converge "
                                         "linearly with a stable Gram matrix")
    p.add_argument("--widths", type=_ints, default=list(DEFAULT_WIDTHS),
                   help=f"hidden widths (default {','.join(map(str, DEFAULT_WIDTHS))})")
    p.add_argument("--n", type=_positive_int, default=40, help="teacher points (default 40)")
    p.add_argument("--d", type=_positive_int, default=10, help="input dimension (default 10)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="init seeds (default 0,1,2)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="GD steps (default: by the slowest mode of H∞)")
    p.add_argument("--step-scale", type=float, default=1.0,
                   help="eta = step_scale / lambda_max(H_inf) (default 1; < 2)")
    p.add_argument("--eval-points", type=_positive_int, default=25,
                   help="steps at which the NTK is computed (default 25)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write overparam.csv, curves.csv, losses.csv, summary.json and "
                        "figures here")
    p.set_defaults(func=_cmd_overparam)


def _cmd_overparam(args) -> int:
    from deepscope.experiments.overparam import overparam_experiment
    res = overparam_experiment(widths=args.widths, n=args.n, d=args.d, seeds=args.seeds,
                               data_seed=args.data_seed, steps=args.steps,
                               step_scale=args.step_scale, eval_points=args.eval_points,
                               progress=not args.quiet)
    if args.out is not None:
        from deepscope.report.dynamics import (plot_gram_curves, plot_loss_curves,
                                               plot_width_scaling)
        from deepscope.report.html import figure_png
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        res.to_csv(out / "overparam.csv")
        res.curves.to_csv(out / "curves.csv", index=False)
        res.losses.to_csv(out / "losses.csv", index=False)
        (out / "summary.json").write_text(json.dumps(res.to_dict(), indent=2))
        for name, plot in (("loss_curves", plot_loss_curves), ("gram_curves", plot_gram_curves),
                           ("width_scaling", plot_width_scaling)):
            (out / f"{name}.png").write_bytes(figure_png(plot(res)))
    return emit(res, args.format, max_rows=60)


COMMANDS = [_add_ntk]
EXPERIMENTS = [_add_overparam]
