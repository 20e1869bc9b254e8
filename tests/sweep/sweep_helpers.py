"""Shared pieces of the sweep tests: tiny specs and a picklable test probe."""
from __future__ import annotations

import copy

import pandas as pd
import torch

from deepscope.result import Result

BASE = {"arch": {"arch": "mlp", "widths": [16]},
        "data": {"name": "digits", "n_train": 200},
        "train": {"epochs": 1, "lr": 0.1, "batch_size": 32}}


def tiny_spec(**extra) -> dict:
    """A spec over the tiny base (MLP [16], digits n_train=200, 1 epoch) plus ``extra``."""
    spec = {"base": copy.deepcopy(BASE)}
    spec.update(copy.deepcopy(extra))
    return spec


def param_norms(checkpoint, *, squared: bool = False) -> Result:
    """Test probe: Frobenius norm of every parameter and the distance from initialization."""
    from deepscope import load
    ck = load(checkpoint)
    rows = []
    for name, p in ck.model.named_parameters():
        norm = float(p.detach().norm())
        init = ck.init_params[name]
        dist = float((p.detach() - init).norm())
        rows.append({"name": name, "norm": norm ** 2 if squared else norm, "dist_init": dist})
    table = pd.DataFrame(rows)
    return Result("param-norms", table,
                  summary={"total_norm": float(table["norm"].sum()),
                           "max_dist_init": float(table["dist_init"].max()),
                           "nested": {"layers": len(rows)}},
                  settings={"squared": squared})


def broken_probe(checkpoint) -> Result:
    """Test probe that always fails."""
    raise RuntimeError("probe exploded\nsecond line")


def weights_of(path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file."""
    from deepscope._io import read_tensors
    return read_tensors(path)
