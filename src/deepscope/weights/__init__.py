"""Weight spectra: heavy-tailed self-regularization (Martin & Mahoney).

``spectra(model)`` is the probe; the pieces are usable alone: ``iter_layer_matrices`` (which
matrices), ``eigenvalues`` (batched, float32 by default), ``analyze_spectrum`` (power-law fit,
norms, Marchenko-Pastur bulk and spikes, phase) and the fits themselves.
"""
from deepscope.weights.analyze import analyze_spectrum
from deepscope.weights.eigs import eigenvalues, randomize_matrix
from deepscope.weights.matrices import LayerMatrices, module_matrices, tensor_matrices
from deepscope.weights.monitor import SpectraMonitor
from deepscope.weights.mp import MPFit, fit_mp, mp_density, mp_edges
from deepscope.weights.phases import classify_phase
from deepscope.weights.powerlaw import (PowerLawFit, bootstrap_alpha_ci, fit_power_law,
                                        fit_truncated_power_law)
from deepscope.weights.probe import spectra
from deepscope.weights.result import COLUMNS, PHASES, SpectraResult
from deepscope.weights.sources import iter_layer_matrices

__all__ = [
    # verbs
    "spectra", "analyze_spectrum", "eigenvalues", "iter_layer_matrices", "module_matrices",
    "tensor_matrices", "fit_power_law", "bootstrap_alpha_ci", "fit_truncated_power_law",
    "fit_mp", "classify_phase", "randomize_matrix", "mp_density", "mp_edges",
    # callbacks and results
    "SpectraMonitor", "SpectraResult", "LayerMatrices", "PowerLawFit", "MPFit",
    "COLUMNS", "PHASES",
]
