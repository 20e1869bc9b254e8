"""Zoo probes of deepscope.generalization for :func:`deepscope.sweep.measure_zoo`.

Registered as built-ins in :mod:`deepscope.sweep.probes`:

- ``"margins"``: :func:`margins_probe`, the margin distributions and their 20-feature
  signature (:func:`deepscope.generalization.margins.margins`) on the checkpoint's training set;
- ``"measures"``: :func:`measures_probe`, the generalization measures of
  :func:`deepscope.generalization.measures.measures` with the checkpoint's initial weights.

Both are top-level functions (picklable by reference for the process engine); heavy imports
happen inside them. ``progress`` is forced off inside workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["margins_probe", "measures_probe"]


def margins_probe(checkpoint: str | Path, **options: Any):
    """Built-in ``"margins"`` probe: margins of a checkpoint on its own dataset."""
    from deepscope.generalization.margins import margins
    from deepscope.train.checkpoint import load_checkpoint
    options["progress"] = False
    ckpt = load_checkpoint(checkpoint)
    return margins(ckpt.model, ckpt.dataset(), **options)


def measures_probe(checkpoint: str | Path, **options: Any):
    """Built-in ``"measures"`` probe: generalization measures of a checkpoint (with its
    initial weights, when stored, for the distance-from-initialization measures)."""
    from deepscope.generalization.measures import measures  # written alongside; lazy import
    from deepscope.train.checkpoint import load_checkpoint
    options["progress"] = False
    ckpt = load_checkpoint(checkpoint)
    return measures(ckpt.model, ckpt.dataset(), init_params=ckpt.init_params, **options)
