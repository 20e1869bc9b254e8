"""Generalization: the measures of "Fantastic generalization measures" (Jiang et al. 2020),
margin signatures (Jiang et al. 2019) and gap prediction over a zoo."""
from deepscope.generalization.bn_fold import fold_batchnorm
from deepscope.generalization.measures import MEASURES, MeasuresResult, measures

__all__ = ["measures", "MeasuresResult", "MEASURES", "fold_batchnorm"]
