"""Reproduced results of the literature, each a function returning a Result.

- :func:`batch_size_study` (Martin & Mahoney): smaller batches -> more eigenvalues outside the
  Marchenko-Pastur bulk of the fully connected layers, lower MP soft rank, heavier tails and
  a smaller generalization gap.
- :func:`inverse_stability_study` (Berner et al.): parameter distance modulo symmetries vs
  realization distance over trained pairs of shallow ReLU nets; injected pathologies break
  the bound and are detected.
- :func:`margin_gap_study` (Jiang et al. 2019, 2020): a zoo of small models, margin signatures
  and generalization measures scored on how well they predict the gap.
- :func:`overparam_experiment` (Du et al. 2018): two-layer ReLU nets of growing width converge
  linearly, keep λ_min(H(t)) >= λ0/2, and drift less from the H∞ Gram as they widen.
- :func:`gdv_depth_study` (Schilling et al. 2018): GDV per layer of MLPs of growing depth,
  and where it stops improving.
- :func:`level_set_study` (Freeman & Bruna 2017): normalized geodesic length and bead count of
  dynamic string sampling against the level L0, and the swapped-units counterexample.
"""
from deepscope.experiments.batch_size import batch_size_spec, batch_size_study
from deepscope.experiments.gdv_depth import gdv_depth_spec, gdv_depth_study
from deepscope.experiments.level_sets import level_set_study
from deepscope.experiments.inverse_stability import inverse_stability_study
from deepscope.experiments.margin_gap import margin_gap_study
from deepscope.experiments.overparam import overparam_experiment

__all__ = ["batch_size_study", "batch_size_spec", "inverse_stability_study", "margin_gap_study",
           "overparam_experiment",
           "gdv_depth_study", "gdv_depth_spec", "level_set_study"]
