"""The result of :func:`deepscope.landscape.connect.connect`.

Table (``COLUMNS``, a public contract): one row per evaluated point of the path, in path order.

==========  ==========================================================================
position    Euclidean distance travelled from θ_a up to the point (through the previous
            rows' points), divided by ‖θ_b − θ_a‖; the last row's value is the normalized
            length for piecewise-linear paths (DSS, linear, polychain) and its inscribed
            polyline approximation for the Bezier curve
segment     index of the path segment (DSS/linear: bead k to bead k+1; polychain: 0, 1;
            Bezier: 0)
t           position inside the segment (DSS/linear) or the curve parameter (curves)
level       the level value (``train_loss`` or ``test_error``)
loss        mean loss on the level's split (train for train_loss, test for test_error)
error       1 − accuracy on that split (NaN for regression)
bead        True on rows at a bead / end point (DSS, linear) or at the end points (curves)
==========  ==========================================================================

The path's points are kept on the object (:attr:`ConnectResult.beads`, flat parameter
vectors), not in the table; ``summary["bead_log"]`` lists every trained bead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from deepscope.result import Result

__all__ = ["COLUMNS", "ConnectResult"]

COLUMNS = ("position", "segment", "t", "level", "loss", "error", "bead")


@dataclass(repr=False)
class ConnectResult(Result):
    """:class:`~deepscope.result.Result` plus the path's points.

    ``beads``: DSS: the beads in path order, end points included; linear: the end points;
    curves: ``[θ_a, θ_c, θ_b]`` (θ_c is the bend: on the polygonal chain, off the Bezier
    curve). ``evaluator``: the :class:`~deepscope.landscape.evaluate.PointEvaluator` used
    (its ``params(θ)`` turns a bead into a parameter dict).
    """

    beads: list[Tensor] = field(default_factory=list)
    evaluator: object = None

    @property
    def connected(self) -> str:
        return self.summary.get("connected", "undetermined")

    @property
    def normalized_length(self) -> float:
        return self.summary.get("normalized_length", float("nan"))

    @property
    def num_beads(self) -> int:
        return int(self.summary.get("num_beads", len(self.beads)))

    def __repr__(self) -> str:
        s = self.summary
        return (f"<ConnectResult {s.get('method')}: connected={s.get('connected')}, "
                f"normalized_length={s.get('normalized_length')}, "
                f"num_beads={s.get('num_beads')}, max_level={s.get('max_level')}>")
