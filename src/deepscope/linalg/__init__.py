"""Matrix-free linear algebra on symmetric operators given as matvecs on flat torch vectors.

- :mod:`~deepscope.linalg.lanczos`: Lanczos with full reorthogonalization, top-k eigenvalues
  with Ritz residuals (own implementation; ARPACK ``eigsh`` as ``method="scipy"``).
- :mod:`~deepscope.linalg.trace`: Hutchinson and Hutch++ trace estimates with standard errors.
- :mod:`~deepscope.linalg.slq`: stochastic Lanczos quadrature spectral densities.

All functions are pure, seeded (probes drawn on the CPU), float64 by default.
"""
from deepscope.linalg.lanczos import (EigenResult, LanczosDecomposition, Matvec, lanczos,
                                      random_unit_vector, top_eigenvalues)
from deepscope.linalg.slq import SpectralDensity, gaussian_density, slq
from deepscope.linalg.trace import (TraceEstimate, hutchinson, hutchpp, rademacher,
                                    trace_estimate)

__all__ = [
    "top_eigenvalues", "lanczos", "hutchinson", "hutchpp", "trace_estimate", "slq",
    "gaussian_density", "random_unit_vector", "rademacher",
    "EigenResult", "LanczosDecomposition", "TraceEstimate", "SpectralDensity", "Matvec",
]
