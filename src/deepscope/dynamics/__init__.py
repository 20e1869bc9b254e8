"""deepscope.dynamics: the empirical NTK, the H∞ Gram of Du et al. and the Gram-stability
training monitor."""
from deepscope.dynamics.hinf import hinf_gram, hinf_lambda0
from deepscope.dynamics.monitor import NTKMonitor, activation_patterns
from deepscope.dynamics.ntk import ntk, ntk_probe
from deepscope.dynamics.result import NTKResult, OverparamResult

__all__ = ["ntk", "ntk_probe", "hinf_gram", "hinf_lambda0", "NTKMonitor",
           "activation_patterns", "NTKResult", "OverparamResult"]
