"""Norm-based quantities of Jiang et al. (ICLR 2020, appendix C): per-layer norms and path norm.

Conventions (stated as the paper asks):

- a layer's matrix is its (BatchNorm-folded) weight; a convolution kernel
  ``(C_out, C_in, k…)`` is reshaped to ``(C_out, C_in·k…)`` and its spectral norm is the
  largest singular value of that matrix (the "reshaped kernel" convention, also used by the
  public reimplementation of the paper; it is not the operator norm of the convolution, which
  Sedghi, Gupta & Long, ICLR 2019 compute with FFTs). Biases are not part of the matrices.
- spectral norms come from ``torch.linalg.matrix_norm(ord=2)`` (an SVD), in float64.
- path norm (Neyshabur, Tomioka & Srebro, COLT 2015; Jiang et al. eq. 44): square every
  parameter of the folded network (biases included), feed an all-ones input of the input
  shape, and sum the outputs. For a ReLU network this is the sum over input-output paths of
  the product of squared weights (bias paths included), because every pre-activation is
  non-negative and ReLU acts as the identity.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._params import functional_forward

__all__ = ["spectral_norm", "frobenius_norm", "layer_norm_table", "path_norm",
           "PATH_NORM_MODULES"]

#: leaf modules allowed by :func:`path_norm` (ReLU networks built from these)
PATH_NORM_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.Identity,
                     nn.Flatten, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                     nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                     nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                     nn.AdaptiveMaxPool2d)


def spectral_norm(mat: Tensor) -> float:
    """Largest singular value of a matrix (float64 SVD)."""
    return float(torch.linalg.matrix_norm(mat.detach().double(), ord=2))


def frobenius_norm(mat: Tensor) -> float:
    return float(torch.linalg.matrix_norm(mat.detach().double(), ord="fro"))


def layer_norm_table(matrices: dict[str, Tensor], init: dict[str, Tensor] | None = None
                     ) -> pd.DataFrame:
    """One row per layer: shape, spectral and Frobenius norm, and (with ``init``) the
    spectral and Frobenius norms of ``W - W0``."""
    rows = []
    for name, w in matrices.items():
        row = {"layer": name, "rows": int(w.shape[0]), "cols": int(w.shape[1]),
               "spectral_norm": spectral_norm(w), "frobenius_norm": frobenius_norm(w),
               "dist_spectral": math.nan, "dist_frobenius": math.nan}
        if init is not None:
            d = w.detach().double() - init[name].detach().double().to(w.device)
            row["dist_spectral"] = spectral_norm(d)
            row["dist_frobenius"] = frobenius_norm(d)
        rows.append(row)
    return pd.DataFrame(rows, columns=["layer", "rows", "cols", "spectral_norm",
                                       "frobenius_norm", "dist_spectral", "dist_frobenius"])


def path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Σ of the outputs of the network with squared parameters on an all-ones input.

    ``model`` must be BatchNorm-free (fold first) and in eval mode; it is not modified.
    """
    p = next(iter(model.parameters()))
    params = {k: v.detach() ** 2 for k, v in model.named_parameters()}
    x = torch.ones((1, *input_shape), dtype=p.dtype, device=p.device)
    with torch.no_grad():
        out = functional_forward(model, params, x)
    return float(out.double().sum())
