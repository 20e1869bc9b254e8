"""How deep is deep enough? GDV per layer of networks of growing depth.

Schilling, Maier, Gerum, Metzner & Krauss ("How deep is deep enough? Quantifying class
separability in the hidden layers of deep neural networks", arXiv 2018; Neural Networks 2021)
train networks of increasing depth and measure the Generalized Discrimination Value (GDV,
:mod:`deepscope.representations.gdv`) of every layer's representation. Published shape: the
GDV first falls (classes separate better) layer by layer and with depth, then stops improving
(or worsens) beyond some depth; they use that turn to pick the depth.

This experiment trains MLPs with each of ``depths`` hidden layers of equal width (He
initialization, SGD with momentum) on a built-in dataset through the sweep engine (resumable;
``engine="process"`` or ``"ray"`` to parallelize), optionally also the MiniAlexNet CNN of
:mod:`deepscope.nets.cnn` (2 conv + 2 fully connected hidden layers, counted as depth 4), and
measures the GDV per layer of each trained net with the built-in ``"gdv"`` zoo probe
(:func:`deepscope.representations.gdv.gdv_probe`). It reports, per net, the
layer with the minimum GDV and where the GDV stops falling along the layers, and across nets
the depth whose output layer has the best (most negative) GDV, mean over seeds.

Defaults (digits, depths 1, 2, 4, 8, 12, 16, width 64, SGD lr 0.01 momentum 0.9, 15 epochs, 100
points per class on the training split) take about two CPU-minutes. What they show (seed 0):
the GDV falls layer by layer in every net and the output layer is each net's best; the
output-layer GDV improves with depth up to 12 hidden layers and is worse at 16, where the
hidden-layer GDV also stalls after ~7 layers -- the turn Schilling et al. describe. One seed
only: pass more seeds before reading much into a single turn.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from deepscope.errors import ConfigError, DataError
from deepscope.representations.gdv import gdv_probe
from deepscope.result import Result

__all__ = ["gdv_depth_spec", "gdv_depth_study", "gdv_probe", "nets_table", "DEFAULT_DEPTHS",
           "DATASETS"]

DEFAULT_DEPTHS = (1, 2, 4, 8, 12, 16)
DATASETS = ("digits", "mnist1d", "gaussian-mixture")
_CNN_DEPTH = 4  # MiniAlexNet: conv1, conv2, fc1, fc2


def _positive_ints(name: str, values) -> list[int]:
    try:
        vals = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of positive integers, got {values!r}") from None
    if not vals or any(v < 1 for v in vals) or any(
            isinstance(v, bool) or float(v) != int(v) for v in values):
        raise ConfigError(f"{name} must be a non-empty list of positive integers, got "
                          f"{list(values)!r}")
    return sorted(set(vals))


def gdv_depth_spec(*, depths: Sequence[int] = DEFAULT_DEPTHS, width: int = 64,
                   seeds: Sequence[int] = (0,), arch: str = "mlp", cnn_width: float = 0.25,
                   dataset: str = "digits", n_train: int | None = None,
                   data_options: Mapping[str, Any] | None = None, epochs: int = 15,
                   lr: float = 0.01, momentum: float = 0.9, batch_size: int = 32
                   ) -> dict[str, Any]:
    """The sweep spec of one family: ``arch="mlp"`` (one task per depth and seed) or
    ``arch="cnn"`` (one MiniAlexNet per seed)."""
    depths = _positive_ints("depths", depths)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds must list at least one seed")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"width must be a positive int, got {width!r}")
    data: dict[str, Any] = {"name": dataset, **dict(data_options or {})}
    if n_train is not None:
        data["n_train"] = int(n_train)
    train = {"optimizer": "sgd", "lr": float(lr), "momentum": float(momentum),
             "epochs": int(epochs), "batch_size": int(batch_size)}
    if arch == "mlp":
        if dataset != "gaussian-mixture":
            data["flat"] = True
        return {"base": {"arch": {"arch": "mlp", "init": "he", "widths": [width]},
                         "data": data, "train": train},
                "grid": {"arch.widths": [[width] * d for d in depths]}, "seeds": seeds}
    if arch == "cnn":
        if dataset == "gaussian-mixture":
            raise ConfigError("the CNN needs image or sequence inputs: use dataset 'digits' "
                              "or 'mnist1d' with arch 'cnn'")
        data["flat"] = False
        return {"base": {"arch": {"arch": "cnn", "init": "he", "width": float(cnn_width)},
                         "data": data, "train": train}, "seeds": seeds}
    raise ConfigError(f"arch must be 'mlp' or 'cnn', got {arch!r}")


def _net(arch_spec: Mapping[str, Any]) -> tuple[str, int]:
    if arch_spec["arch"] == "mlp":
        d = len(arch_spec["widths"])
        return f"mlp-{d}", d
    return "cnn", _CNN_DEPTH


def gdv_depth_study(zoo_dir: str | Path, *, depths: Sequence[int] = DEFAULT_DEPTHS,
                    width: int = 64, seeds: Sequence[int] = (0,), include_cnn: bool = False,
                    cnn_width: float = 0.25, dataset: str = "digits",
                    n_train: int | None = None, data_options: Mapping[str, Any] | None = None,
                    epochs: int = 15, lr: float = 0.01, momentum: float = 0.9,
                    batch_size: int = 32, max_per_class: int | None = 100,
                    split: str = "train", engine: str = "local", workers: int | None = None,
                    address: str | None = None, task_cpus: float = 1, task_gpus: float = 0,
                    threads: int | None = None, progress: bool = True) -> Result:
    """Train (or resume) the nets in ``zoo_dir``, measure GDV per layer, find the turn.

    Engine options (``engine`` ... ``threads``) are those of :func:`deepscope.sweep.run_sweep`.

    Returns a Result with one row per (run, layer): ``net``, ``arch``, ``depth``, ``seed``,
    ``run_id``, ``layer``, ``index`` (0 = input), ``dim``, ``gdv``, ``intra_mean``,
    ``inter_mean``, ``train_acc``, ``test_acc``. Summary: ``nets`` (per net, means over seeds:
    output-layer GDV, best layer and its GDV, where the GDV stops falling along the layers,
    accuracies), ``output_gdv_by_depth``, ``best_depth`` (the MLP depth with the most negative
    output-layer GDV), ``stops_improving_at_depth`` (first depth whose successor does not
    improve the output-layer GDV), ``runs``, ``trained_now``, ``failed``.
    """
    from deepscope.representations.gdv import first_local_minimum
    from deepscope.sweep import Catalog, expand_spec, measure_zoo, run_sweep, settings_hash

    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if max_per_class is not None and (isinstance(max_per_class, bool)
                                      or not isinstance(max_per_class, int)
                                      or max_per_class < 2):
        # checked here: inside the probe it would only fail every run, silently
        raise ConfigError(f"max_per_class must be an integer >= 2 (intra-class pairs) or "
                          f"None, got {max_per_class!r}")
    common = dict(seeds=seeds, dataset=dataset, n_train=n_train, data_options=data_options,
                  epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size)
    specs = [gdv_depth_spec(depths=depths, width=width, arch="mlp", **common)]
    if include_cnn:
        specs.append(gdv_depth_spec(arch="cnn", cnn_width=cnn_width, **common))
    options = {"max_per_class": max_per_class, "split": split, "seed": 0}
    kw = dict(engine=engine, workers=workers, address=address, task_cpus=task_cpus,
              task_gpus=task_gpus, threads=threads, progress=progress)
    trained = failed = 0
    errors: dict[str, str] = {}
    for spec in specs:
        s = run_sweep(spec, zoo_dir, **kw)
        trained, failed = trained + s.done, failed + s.failed
        errors.update(s.errors)
    wanted = {t.id for spec in specs for t in expand_spec(spec)}
    m = measure_zoo(zoo_dir, ["gdv"], options={"gdv": options}, runs=sorted(wanted), **kw)
    h = settings_hash(options)
    with Catalog(zoo_dir) as cat:
        runs = {r["id"]: r for r in cat.runs("done") if r["id"] in wanted}
        meas = {x["run_id"]: x for x in cat.measurements("gdv", with_tables=True)
                if x["run_id"] in runs and x["settings_hash"] == h and not x.get("error")}
    rows = []
    for run_id, run in runs.items():
        cfg, met = run["config"], run["metrics"] or {}
        if run_id not in meas:
            continue
        net, depth = _net(cfg["arch"])
        for r in meas[run_id]["table"]:
            rows.append({"net": net, "arch": cfg["arch"]["arch"], "depth": depth,
                         "seed": cfg["train"]["seed"], "run_id": run_id,
                         "layer": r["layer"], "index": r["index"], "dim": r["dim"],
                         "gdv": r["gdv"], "intra_mean": r["intra_mean"],
                         "inter_mean": r["inter_mean"], "train_acc": met.get("train_acc"),
                         "test_acc": met.get("test_acc")})
    cols = ["net", "arch", "depth", "seed", "run_id", "layer", "index", "dim", "gdv",
            "intra_mean", "inter_mean", "train_acc", "test_acc"]
    table = pd.DataFrame(rows, columns=cols)
    if not len(table):  # nothing to report: say why instead of an empty table and exit 0
        errors.update(m.errors)
        why = (f"; first error: {next(iter(errors.values()))}" if errors
               else " (no finished run)")
        raise DataError(f"gdv-depth: no GDV could be measured on any of the {len(wanted)} "
                        f"nets{why}")
    if len(table):
        table = table.sort_values(["arch", "depth", "seed", "index"],
                                  ascending=[False, True, True, True]).reset_index(drop=True)
    nets = []
    for (arch, depth, net), g in table.groupby(["arch", "depth", "net"], sort=False):
        curve = g.groupby(["index", "layer"], sort=True)["gdv"].mean().reset_index()
        hidden = curve[curve["layer"] != "input"]
        best = curve.loc[curve["gdv"].idxmin()]
        turn = hidden.iloc[first_local_minimum(hidden["gdv"])] if len(hidden) else best
        nets.append({"net": net, "arch": arch, "depth": int(depth),
                     "seeds": int(g["seed"].nunique()),
                     "output_layer": str(curve.iloc[-1]["layer"]),
                     "output_gdv": float(curve.iloc[-1]["gdv"]),
                     "best_layer": str(best["layer"]), "best_index": int(best["index"]),
                     "best_gdv": float(best["gdv"]),
                     "stops_improving_at": str(turn["layer"]),
                     "train_acc": float(g.drop_duplicates("run_id")["train_acc"].mean()),
                     "test_acc": float(g.drop_duplicates("run_id")["test_acc"].mean())})
    mlp = sorted((n for n in nets if n["arch"] == "mlp"), key=lambda n: n["depth"])
    by_depth = {str(n["depth"]): n["output_gdv"] for n in mlp}
    best_depth = (min(mlp, key=lambda n: n["output_gdv"])["depth"] if mlp else None)
    stop_depth = (mlp[first_local_minimum([n["output_gdv"] for n in mlp])]["depth"]
                  if mlp else None)
    summary = {"runs": int(table["run_id"].nunique()) if len(table) else 0,
               "trained_now": trained, "failed": failed + m.failed, "nets": nets,
               "output_gdv_by_depth": by_depth, "best_depth": best_depth,
               "best_output_gdv": (min(by_depth.values()) if by_depth else math.nan),
               "stops_improving_at_depth": stop_depth}
    settings = {"zoo_dir": str(zoo_dir), "depths": sorted({int(d) for d in depths}),
                "width": width, "seeds": [int(s) for s in seeds], "include_cnn": include_cnn,
                "cnn_width": cnn_width, "dataset": dataset, "n_train": n_train,
                "data_options": dict(data_options or {}), "epochs": epochs, "lr": lr,
                "momentum": momentum, "batch_size": batch_size, "max_per_class": max_per_class,
                "split": split, "engine": engine}
    return Result("gdv-depth", table, summary=summary, settings=settings)


def nets_table(result: Result) -> pd.DataFrame:
    """The per-net summary of a gdv-depth result as a DataFrame."""
    return pd.DataFrame(result.summary.get("nets", []))
