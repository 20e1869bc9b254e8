"""The margin-gap study: do margin distributions predict the generalization gap across a zoo
of models (Jiang, Krishnan, Mobahi & Bengio, ICLR 2019), and how do the measures of
"Fantastic generalization measures" (Jiang et al., ICLR 2020) rank the same models?

Their model set (DEMOGEN, 756 TensorFlow models on CIFAR-10/100) is no longer downloadable,
so the study builds its own zoo with the sweep engine: a base MLP on a built-in dataset and a
"star" design around it, where each hyper-parameter in turn takes every value of its list
while the others stay at the base value:

==================  =======================  ========================
hyper-parameter     sweep key                default values (base first)
==================  =======================  ========================
width               arch.widths              64; 16, 256
depth               arch.widths              3; 2, 5 hidden layers
learning rate       train.lr                 0.02; 0.005, 0.08
batch size          train.batch_size         32; 8, 128
weight decay        train.weight_decay       0; 5e-4, 5e-3
dropout             arch.dropout             0; 0.2, 0.5
label noise         data.label_noise         0; 0.1, 0.3
==================  =======================  ========================

15 configurations x 4 seeds = 60 models (digits, 500 training points, SGD with momentum 0.9,
40 epochs). Each arm is one grid sweep (:func:`deepscope.sweep.run_sweep`) into the same zoo;
task ids are content hashes, so the base runs are shared and a re-run resumes. The star
design makes every arm one group of the granulated Ψ per seed (models differing only in that
hyper-parameter). Then :func:`deepscope.generalization.predict.predict_gap` measures margins
(and the measures), fits the signature regression (k-fold) and scores everything.

One measured run of the defaults (``deepscope experiment margin-gap --engine process
--workers 2``, 2 otherwise idle CPU cores, 2026-11-23): 63 s wall (training 22 s, margins
and all measures 35 s; 5 min 46 s on the same cores shared with other jobs). Gaps mean
0.074 (sd 0.070); the signature regression reached k-fold R² 0.59 (adjusted 0.38; 0.79
with ``ridge=1``) and τ 0.40 between out-of-fold prediction and gap; the best single
measure was ``pacbayes_mag_flatness`` (τ 0.50, Ψ 0.62); ``sharpness_flatness`` (box
|u_i| ≤ α) τ 0.16.
Bigger zoos: more ``seeds`` and alternatives per arm, ``engine="ray"`` (``address=`` for a
cluster whose nodes share the zoo directory).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepscope.errors import ConfigError

__all__ = ["margin_gap_specs", "margin_gap_study", "DEFAULTS"]

#: the base values and the alternatives of each hyper-parameter
DEFAULTS: dict[str, Any] = {
    "width": (64, (16, 256)),
    "depth": (3, (2, 5)),
    "lr": (0.02, (0.005, 0.08)),
    "batch_size": (32, (8, 128)),
    "weight_decay": (0.0, (5e-4, 5e-3)),
    "dropout": (0.0, (0.2, 0.5)),
    "label_noise": (0.0, (0.1, 0.3)),
}


def _values(name: str, given) -> list:
    base, alts = DEFAULTS[name]
    alts = list(alts if given is None else given)
    return [base, *[a for a in alts if a != base]]


def margin_gap_specs(*, dataset: str = "digits", n_train: int | None = 500, epochs: int = 40,
                     seeds: Sequence[int] = (0, 1, 2, 3), momentum: float = 0.9,
                     widths: Sequence[int] | None = None, depths: Sequence[int] | None = None,
                     lrs: Sequence[float] | None = None,
                     batch_sizes: Sequence[int] | None = None,
                     weight_decays: Sequence[float] | None = None,
                     dropouts: Sequence[float] | None = None,
                     label_noises: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The sweep specs of the study: one grid spec per hyper-parameter arm.

    Each ``*s`` argument lists the alternatives to the base value (``DEFAULTS``); an empty
    list leaves that hyper-parameter fixed.
    """
    if not seeds:
        raise ConfigError("seeds must list at least one seed")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    w = _values("width", widths)
    d = _values("depth", depths)
    if any(int(x) < 1 for x in w + d):
        raise ConfigError(f"widths and depths must be positive, got {w} and {d}")
    bw, bd = w[0], d[0]
    data: dict[str, Any] = {"name": dataset, "label_noise": 0.0}
    if dataset in ("digits", "mnist1d"):
        data["flat"] = True
    if n_train is not None:
        data["n_train"] = int(n_train)
    base = {"arch": {"arch": "mlp", "widths": [bw] * bd, "dropout": 0.0},
            "data": data,
            "train": {"optimizer": "sgd", "lr": DEFAULTS["lr"][0], "momentum": float(momentum),
                      "batch_size": DEFAULTS["batch_size"][0], "weight_decay": 0.0,
                      "epochs": int(epochs)}}
    arms = {
        "arch.widths": [[int(x)] * bd for x in w] + [[bw] * int(x) for x in d[1:]],
        "train.lr": [float(x) for x in _values("lr", lrs)],
        "train.batch_size": [int(x) for x in _values("batch_size", batch_sizes)],
        "train.weight_decay": [float(x) for x in _values("weight_decay", weight_decays)],
        "arch.dropout": [float(x) for x in _values("dropout", dropouts)],
        "data.label_noise": [float(x) for x in _values("label_noise", label_noises)],
    }
    return [{"base": base, "grid": {key: vals}, "seeds": [int(s) for s in seeds]}
            for key, vals in arms.items()]


def margin_gap_study(zoo_dir: str | Path, *, dataset: str = "digits",
                     n_train: int | None = 500, epochs: int = 40,
                     seeds: Sequence[int] = (0, 1, 2, 3), momentum: float = 0.9,
                     widths: Sequence[int] | None = None, depths: Sequence[int] | None = None,
                     lrs: Sequence[float] | None = None,
                     batch_sizes: Sequence[int] | None = None,
                     weight_decays: Sequence[float] | None = None,
                     dropouts: Sequence[float] | None = None,
                     label_noises: Sequence[float] | None = None,
                     measures: bool = True, measure_options: Mapping[str, Any] | None = None,
                     k: int = 5, ridge: float = 0.0, engine: str = "local",
                     workers: int | None = None, address: str | None = None,
                     threads: int | None = None, task_cpus: float = 1, task_gpus: float = 0,
                     progress: bool = True):
    """Build (or resume) the zoo, measure it and score margins and measures against the gap.

    Returns the :class:`~deepscope.generalization.predict.GapResult` of ``predict_gap``
    (kind ``"margin-gap"``); ``summary`` adds ``train_s`` and ``measure_s`` (wall seconds),
    ``trained_now`` and ``train_failed``.
    """
    from deepscope.generalization.predict import predict_gap
    from deepscope.sweep import expand_spec, run_sweep

    specs = margin_gap_specs(dataset=dataset, n_train=n_train, epochs=epochs, seeds=seeds,
                             momentum=momentum, widths=widths, depths=depths, lrs=lrs,
                             batch_sizes=batch_sizes, weight_decays=weight_decays,
                             dropouts=dropouts, label_noises=label_noises)
    kw = dict(engine=engine, workers=workers, address=address, threads=threads,
              task_cpus=task_cpus, task_gpus=task_gpus, progress=progress)
    wanted: dict[str, None] = {}
    for spec in specs:  # validate every arm before training any
        wanted.update(dict.fromkeys(t.id for t in expand_spec(spec)))
    t0 = time.perf_counter()
    trained, failed = 0, 0
    for spec in specs:
        s = run_sweep(spec, zoo_dir, **kw)
        trained += s.done
        failed += s.failed
    t1 = time.perf_counter()
    res = predict_gap(zoo_dir, measures=measures, measure_options=measure_options, k=k,
                      ridge=ridge, runs=list(wanted), fixed=("train.seed",), **kw)
    t2 = time.perf_counter()
    res.kind = "margin-gap"
    res.summary.update({"trained_now": trained, "train_failed": failed,
                        "train_s": t1 - t0, "measure_s": t2 - t1, "total_s": t2 - t0})
    res.settings.update({"dataset": dataset, "n_train": n_train, "epochs": epochs,
                         "seeds": list(seeds), "momentum": momentum,
                         "arms": {next(iter(s["grid"])): next(iter(s["grid"].values()))
                                  for s in specs}})
    return res
