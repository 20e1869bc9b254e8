"""The result of :func:`deepscope.landscape.surface.surface`.

Table layout (``COLUMNS``, a public contract), one row per grid point, ``a`` varying slowest:

========  ==============================================================================
i, j      grid indices along the first / second direction (``j`` is 0 for a 1-D line)
a, b      coordinates: the point is ``theta + a*d1 + b*d2`` (``b`` is 0.0 for a line)
loss      mean loss over the evaluated split at that point
accuracy  fraction of correct argmax predictions (NaN for regression targets)
========  ==============================================================================

The direction tensors are kept on the result (:attr:`SurfaceResult.directions`) and written
next to the table by :meth:`SurfaceResult.save` (``directions.safetensors``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from deepscope.result import Result

__all__ = ["COLUMNS", "SurfaceResult"]

#: Table columns, in order (names never change).
COLUMNS = ("i", "j", "a", "b", "loss", "accuracy")


@dataclass(repr=False)
class SurfaceResult(Result):
    """:class:`~deepscope.result.Result` plus the direction tensors of the slice."""

    directions: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def dims(self) -> int:
        return int(self.summary.get("dims", 1))

    def axes(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Coordinates along the first direction and (2-D) the second one."""
        t = self.table
        a = t.drop_duplicates("i").sort_values("i")["a"].to_numpy(dtype=float)
        if self.dims == 1:
            return a, None
        b = t.drop_duplicates("j").sort_values("j")["b"].to_numpy(dtype=float)
        return a, b

    def grid(self, column: str = "loss") -> np.ndarray:
        """``column`` as an array: shape ``(steps,)`` for a line, ``(steps_a, steps_b)`` for a
        plane, entry ``[i, j]`` at ``(a_i, b_j)``."""
        t = self.table
        si, sj = int(t["i"].max()) + 1, int(t["j"].max()) + 1
        out = np.full((si, sj), np.nan)
        out[t["i"].to_numpy(int), t["j"].to_numpy(int)] = t[column].to_numpy(float)
        return out[:, 0] if self.dims == 1 else out

    @property
    def trajectory_coords(self) -> np.ndarray | None:
        """The projected training trajectory (pca-trajectory directions), shape (n, dims)."""
        c = self.summary.get("trajectory_coords")
        return None if c is None else np.asarray(c, dtype=float)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``surface.csv``, ``surface.json`` (summary, settings, table) and
        ``directions.safetensors`` (``d{k}.{parameter}``) into ``out_dir``."""
        from safetensors.torch import save_file

        from deepscope._io import atomic_write
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "surface.csv") as tmp:
            self.to_csv(tmp)
        with atomic_write(out / "surface.json") as tmp:
            self.to_json(tmp)
        tensors = {f"d{k + 1}.{name}": t.detach().cpu().contiguous()
                   for k, d in enumerate(self.directions) for name, t in d.items()}
        with atomic_write(out / "directions.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"num_directions": str(len(self.directions))})
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> "SurfaceResult":
        """Read back what :meth:`save` wrote."""
        from deepscope._io import read_tensors
        out = Path(out_dir)
        data = json.loads((out / "surface.json").read_text())
        tensors = read_tensors(out / "directions.safetensors")
        n = max((int(k.split(".", 1)[0][1:]) for k in tensors), default=0)
        directions: list[dict[str, Tensor]] = [{} for _ in range(n)]
        for key, t in tensors.items():
            head, name = key.split(".", 1)
            directions[int(head[1:]) - 1][name] = t
        table = pd.DataFrame(data["table"], columns=list(COLUMNS)).astype(
            {"loss": float, "accuracy": float})
        return cls(kind=data["kind"], table=table, summary=data.get("summary", {}),
                   settings=data.get("settings", {}), directions=directions)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict()
