"""deepscope.representations: layer activations, the generalized discrimination value
(Schilling et al. 2018) and linear CKA (Kornblith et al. 2019)."""
from deepscope.representations.activations import (capture_activations, default_layers,
                                                   resolve_layers)
from deepscope.representations.cka import CKAResult, cka, linear_cka
from deepscope.representations.gdv import GDVResult, GDVStats, gdv, gdv_of

__all__ = ["gdv", "gdv_of", "cka", "linear_cka", "capture_activations", "default_layers",
           "resolve_layers", "GDVResult", "GDVStats", "CKAResult"]
