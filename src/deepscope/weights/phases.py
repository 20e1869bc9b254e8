r"""The 5+1 phases of training, read off one layer's eigenvalue spectrum.

Martin & Mahoney, "Implicit Self-Regularization in Deep Neural Networks: Evidence from Random
Matrix Theory and Implications for Learning", JMLR 22 (2021), Table 1 and Section 5; the
alpha ranges are theirs (Nature Communications 2021: 2 <= alpha <= 4 is "well trained").

The paper describes the phases by the shape of the ESD; the boundaries between the first three
are a judgment. deepscope's operational rule, applied in this order (first match wins), using
the Marchenko-Pastur fit (:mod:`deepscope.weights.mp`), the power-law fit
(:mod:`deepscope.weights.powerlaw`) and the rank-collapse fraction
(:mod:`deepscope.weights.norms`):

1. ``undetermined``  -- the spectrum is not finite (NaN/Inf).
2. ``rank-collapse`` -- more than ``RANK_COLLAPSE_FRACTION`` (10 %) of the eigenvalues are
   numerically zero (this includes W = 0).
3. ``undetermined``  -- neither the MP fit nor the power-law fit succeeded (e.g. too few
   eigenvalues).
4. MP regime: the MP fit succeeded, the bulk (eigenvalues up to the spike threshold) is within
   KS distance ``max(MP_KS_TOL, 4/M)`` of the fitted MP law (``MP_KS_TOL`` = 0.05; a Gaussian
   matrix gives about 3/M), and there are at most ``max(MAX_SPIKE_FRACTION * n, sqrt(n))``
   spikes among the n eigenvalues ("a few": 5 %, but small layers may carry one spike per
   class, e.g. 10 spikes of 128 eigenvalues in a digits classifier). Then

   a. ``random-like``  -- no spike;
   b. ``bulk+spikes``  -- more spikes are separated from the edge than bleed from it
      (separated: beyond :math:`\lambda_+ + \max(0.1(\lambda_+ - \lambda_-), 2 c\, s_{TW})`);
   c. ``bleeding-out`` -- otherwise: spikes sit mostly just past :math:`\lambda_+`.

5. Power-law regime: the power-law fit succeeded. Then

   a. ``heavy-tailed`` -- :math:`\hat\alpha \le 4` (this includes the "very heavy-tailed"
      :math:`\hat\alpha < 2`);
   b. ``bulk-decay``   -- :math:`4 < \hat\alpha \le 6`;
   c. :math:`\hat\alpha > 6`, no power-law tail worth the name: ``random-like`` if there is no
      spike, else ``bulk+spikes`` / ``bleeding-out`` by the rule of 4b/4c (``random-like``
      if the MP fit failed).

6. ``undetermined`` -- anything else: the power-law fit failed and the bulk is not MP. An
   orthogonal matrix lands here: all eigenvalues are equal, so the power-law fit is
   ``degenerate`` and a point mass is far (in KS distance) from any MP law.
"""
from __future__ import annotations

import math

from deepscope.weights.mp import MPFit
from deepscope.weights.powerlaw import PowerLawFit

__all__ = [
    "PHASES", "classify_phase", "RANK_COLLAPSE_FRACTION", "MP_KS_TOL", "MAX_SPIKE_FRACTION",
    "HEAVY_TAILED_MAX_ALPHA", "BULK_DECAY_MAX_ALPHA",
]

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
          "rank-collapse", "undetermined")
RANK_COLLAPSE_FRACTION = 0.1
MP_KS_TOL = 0.05
MAX_SPIKE_FRACTION = 0.05
HEAVY_TAILED_MAX_ALPHA = 4.0
BULK_DECAY_MAX_ALPHA = 6.0


def _spiky_phase(mp: MPFit) -> str:
    if mp.num_spikes == 0:
        return "random-like"
    return "bulk+spikes" if mp.num_separated > mp.num_bleeding else "bleeding-out"


def classify_phase(fit: PowerLawFit, mp: MPFit, rank_collapse_fraction: float) -> str:
    """The phase of one spectrum by the rule in the module docstring (one of :data:`PHASES`)."""
    if fit.status == "not_finite" or mp.status == "not_finite":
        return "undetermined"
    if math.isfinite(rank_collapse_fraction) and rank_collapse_fraction > RANK_COLLAPSE_FRACTION:
        return "rank-collapse"
    if not (fit.ok or mp.ok):
        return "undetermined"
    if mp.ok:
        tol = max(MP_KS_TOL, 4.0 / mp.M)
        allowed = max(MAX_SPIKE_FRACTION * mp.num_evals, math.sqrt(mp.num_evals))
        if mp.ks_distance <= tol and mp.num_spikes <= allowed:
            return _spiky_phase(mp)
    if fit.ok:
        if fit.alpha <= HEAVY_TAILED_MAX_ALPHA:
            return "heavy-tailed"
        if fit.alpha <= BULK_DECAY_MAX_ALPHA:
            return "bulk-decay"
        if mp.ok:
            return _spiky_phase(mp)
        return "random-like"
    return "undetermined"
