"""Realization vs parametrization of shallow ReLU nets (Berner, Elbrächter, Grohs et al. 2019).

``deepscope.realization(a, b, domain=...)`` compares two nets modulo the symmetries of ReLU
networks (neuron permutations, positive rescalings): parameter distance raw and after
canonicalization + Hungarian matching, realization distance (sup and Sobolev) on a domain,
and the pathologies that break inverse stability. The subpackage itself is callable (like
``deepscope.train``), so ``deepscope.realization.canonical`` etc. stay importable.
"""
import sys as _sys
import types as _types

from deepscope.realization.canonical import (canonical_form, canonicalize, match_neurons,
                                             parameter_distance)
from deepscope.realization.distance import realization_distance
from deepscope.realization.pathologies import detect_pathologies
from deepscope.realization.probe import realization
from deepscope.realization.result import RealizationResult
from deepscope.realization.shallow import ShallowReLU, extract_shallow


class _CallableRealizationModule(_types.ModuleType):
    """``deepscope.realization(a, b, ...)`` calls :func:`realization`; the name stays the
    subpackage."""

    def __call__(self, *args, **kwargs):
        return realization(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableRealizationModule

__all__ = ["realization", "RealizationResult", "ShallowReLU", "extract_shallow",
           "canonicalize", "canonical_form", "match_neurons", "parameter_distance",
           "realization_distance", "detect_pathologies"]
