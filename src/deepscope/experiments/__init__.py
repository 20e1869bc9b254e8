"""Reproduced results of the literature, each a function returning a Result.

- :func:`batch_size_study` (Martin & Mahoney): smaller batches -> more eigenvalues outside the
  Marchenko-Pastur bulk of the fully connected layers, lower MP soft rank, heavier tails and
  a smaller generalization gap.
"""
from deepscope.experiments.batch_size import batch_size_spec, batch_size_study

__all__ = ["batch_size_study", "batch_size_spec"]
