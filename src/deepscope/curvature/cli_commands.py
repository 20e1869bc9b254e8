"""The ``deepscope hessian`` sub-command: argument parsing and printing only.

``deepscope.cli`` adds it with ``_add_hessian(sub)`` (which sets ``func=_cmd_hessian``).
DeepscopeErrors raised by the API become exit code 2 in the CLI's main.

    deepscope hessian run.safetensors --k 5 --which top,trace --probes 100
    deepscope hessian run.safetensors --per-layer --max-samples 2048 --format csv
    deepscope hessian run.safetensors --which density --out hess/   # table, summary, density
    deepscope hessian run.safetensors --which top --k 2 --vectors top2.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

from deepscope._cli_common import emit
from deepscope._cli_common import positive_int as _positive_int

__all__ = ["_add_hessian", "_cmd_hessian", "write_vectors", "HESSIAN_COMMANDS"]


def _quantities(text: str) -> tuple[str, ...]:
    from deepscope.curvature.probe import QUANTITIES
    vals = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [v for v in vals if v not in QUANTITIES]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of "
                                         f"{','.join(QUANTITIES)}, got {text!r}")
    return vals


def _add_hessian(sub) -> None:
    p = sub.add_parser("hessian", help="top eigenvalues, trace and spectral density of the "
                                       "loss Hessian (or GGN) of a checkpoint")
    p.add_argument("checkpoint", type=Path, help="deepscope checkpoint (.safetensors)")
    p.add_argument("--k", type=_positive_int, default=5, help="top eigenvalues (default 5)")
    p.add_argument("--which", type=_quantities, default=("top", "trace", "density"),
                   help="comma-separated: top,trace,density (default all)")
    p.add_argument("--trace-method", choices=("hutch++", "hutchinson"), default="hutch++")
    p.add_argument("--probes", type=_positive_int, default=100,
                   help="Hessian-vector products for the trace (default 100)")
    p.add_argument("--density-runs", type=_positive_int, default=3)
    p.add_argument("--lanczos-steps", type=_positive_int, default=64,
                   help="Lanczos steps per density run (default 64)")
    p.add_argument("--per-layer", nargs="?", const="module", default=None,
                   choices=("module", "parameter"),
                   help="also per block: each module (default) or each parameter tensor")
    p.add_argument("--ggn", action="store_true", help="generalized Gauss-Newton, not Hessian")
    p.add_argument("--batch-size", type=_positive_int, default=4096,
                   help="samples per product chunk (default 4096)")
    p.add_argument("--max-samples", type=_positive_int, default=None,
                   help="random subset of the training data (default all)")
    p.add_argument("--tol", type=float, default=None, help="Lanczos residual tolerance")
    p.add_argument("--rtol", type=float, default=None,
                   help="also stop once each top eigenvalue's estimated relative error is "
                        "below this (e.g. 1e-3)")
    p.add_argument("--start", choices=("random", "output-layer"), default="random",
                   help="Lanczos start for the top eigenvalues: random (default) or the top "
                        "eigenvector of the output layer's block (fewer products on trained "
                        "classifiers)")
    p.add_argument("--order", choices=("largest", "magnitude"), default="largest",
                   help="top eigenvalues by value (default) or by |value| (PyHessian's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float64", action="store_true", help="compute in float64")
    p.add_argument("--device", help="cpu, cuda, ... (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", type=Path, default=None,
                   help="write hessian.csv, summary.json, density.csv and density.png here")
    p.add_argument("--vectors", type=Path, default=None, metavar="FILE.safetensors",
                   help="also write the top-k eigenvectors (tensors 'v0.<parameter>', "
                        "'v1.<parameter>', ...; eigenvalues in the metadata)")
    p.set_defaults(func=_cmd_hessian)


def _write_out(res, out: Path) -> None:
    import numpy as np
    out.mkdir(parents=True, exist_ok=True)
    res.to_csv(out / "hessian.csv")
    (out / "summary.json").write_text(res.to_json())
    for block, d in res.densities.items():
        name = "density.csv" if block == "all" else f"density_{block.replace('/', '_')}.csv"
        np.savetxt(out / name, np.column_stack([d.grid, d.density]), delimiter=",",
                   header="grid,density", comments="")
    if "all" in res.densities:
        from deepscope.report.curvature import plot_density
        from deepscope.report.html import figure_png
        (out / "density.png").write_bytes(figure_png(plot_density(res)))


def write_vectors(res, path: Path) -> None:
    """The result's eigenvectors as one safetensors file: ``v{i}.{parameter}`` tensors, the
    eigenvalues (JSON list) in the metadata."""
    import json

    from safetensors.torch import save_file

    from deepscope._io import atomic_write
    tensors = {f"v{i}.{name}": t.detach().cpu().contiguous()
               for i, vec in enumerate(res.eigenvectors) for name, t in vec.items()}
    meta = {"format": "deepscope-hessian-eigenvectors",
            "eigenvalues": json.dumps([float(v) for v in res.eigenvalues()]),
            "curvature": str(res.summary["curvature"])}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _cmd_hessian(args) -> int:
    import torch
    from deepscope.curvature import hessian
    from deepscope.errors import ConfigError
    from deepscope.train.checkpoint import load_checkpoint
    if args.vectors is not None:
        if "top" not in args.which:
            raise ConfigError(f"--vectors needs 'top' in --which, got {','.join(args.which)}")
        if args.vectors.suffix != ".safetensors":
            raise ConfigError(f"--vectors: expected a .safetensors path, got {args.vectors}")
    ckpt = load_checkpoint(args.checkpoint)
    res = hessian(ckpt.model, ckpt.dataset(), loss=ckpt.loss_name, k=args.k, which=args.which,
                  trace_method=args.trace_method, probes=args.probes,
                  density_runs=args.density_runs, lanczos_steps=args.lanczos_steps,
                  per_layer=args.per_layer or False, ggn=args.ggn,
                  batch_size=args.batch_size, max_samples=args.max_samples, tol=args.tol,
                  rtol=args.rtol, start=args.start, order=args.order,
                  seed=args.seed, dtype=torch.float64 if args.float64 else torch.float32,
                  device=args.device, vectors=args.vectors is not None,
                  progress=not args.quiet)
    if args.out is not None:
        _write_out(res, args.out)
    if args.vectors is not None:
        write_vectors(res, args.vectors)
    return emit(res, args.format)


HESSIAN_COMMANDS = [_add_hessian]
COMMANDS = HESSIAN_COMMANDS
