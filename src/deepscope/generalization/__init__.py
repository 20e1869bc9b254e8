"""Generalization: the measures of "Fantastic generalization measures" (Jiang et al. 2020),
margin signatures (Jiang et al. 2019), their scores (Kendall tau, granulated Psi, PGDL CMI)
and gap prediction over a zoo.

Must not import :mod:`deepscope.sweep` at import time (the sweep's probe registry imports
:mod:`deepscope.generalization.probes`).
"""
from deepscope.generalization.bn_fold import fold_batchnorm
from deepscope.generalization.margins import MarginResult, margins
from deepscope.generalization.measures import MEASURES, MeasuresResult, measures
from deepscope.generalization.predict import (GapPredictor, GapResult, apply_predictor,
                                              load_predictor, predict_gap)
from deepscope.generalization.scores import (conditional_mi, granulated_psi, kendall_tau,
                                             kfold_r2)

__all__ = ["measures", "MeasuresResult", "MEASURES", "fold_batchnorm", "margins",
           "MarginResult", "predict_gap", "GapResult", "GapPredictor", "apply_predictor",
           "load_predictor", "kendall_tau", "granulated_psi", "conditional_mi", "kfold_r2"]
