"""Resume file of :func:`deepscope.landscape.surface.surface` (``resume=PATH``).

Every finished chunk of grid points is added to a JSON file (format ``RESUME_FORMAT``,
rewritten atomically with :func:`deepscope._io.atomic_write`, so a crash never leaves a
half-written file); a rerun with the same settings computes only the missing points. The file
keeps the settings it was written for (:func:`resume_key`: grid, ranges, directions, seed,
split, loss, subset, BatchNorm mode, plus SHA-256 fingerprints of the model's weights and
buffers, the evaluated data and the directions); a file written for other settings is refused
with a :class:`ConfigError` naming the differences.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from deepscope._io import atomic_write
from deepscope.errors import ConfigError
from deepscope.landscape.directions import directions_fingerprint

__all__ = ["RESUME_FORMAT", "resume_key", "hash_tensors", "open_resume", "read_resume",
           "write_resume"]

RESUME_FORMAT = "deepscope-surface-resume/1"

Points = dict[int, tuple[float, float]]  # grid index -> (loss, accuracy)


def hash_tensors(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes (on the CPU)."""
    h = hashlib.sha256()
    for t in tensors:
        d = t.detach().cpu().contiguous()
        h.update(str(d.dtype).encode() + str(tuple(d.shape)).encode())
        h.update(d.view(-1).view(torch.uint8).numpy().tobytes() if d.numel() else b"")
    return h.hexdigest()


def resume_key(settings: Mapping, *, model: Sequence[Tensor], data: Sequence[Tensor],
               directions: list[dict[str, Tensor]]) -> dict:
    """The settings a resume file must match: ``settings`` (JSON-able) followed by the
    fingerprints ``model`` (parameters and buffers), ``data`` (inputs and targets evaluated)
    and ``directions_sha256``."""
    return {**settings, "model": hash_tensors(*model), "data": hash_tensors(*data),
            "directions_sha256": directions_fingerprint(directions)}


def open_resume(resume: str | Path | None, key: dict, total_points: int
                ) -> tuple[Path | None, Points]:
    """The resume path (None without one) and its finished points below ``total_points``."""
    if resume is None:
        return None, {}
    path = Path(resume)
    if path.is_dir():
        raise ConfigError(f"resume must be a file path, got the directory {path}")
    return path, {i: v for i, v in read_resume(path, key).items() if i < total_points}


def read_resume(path: Path, key: dict) -> Points:
    """Finished points of the resume file at ``path`` ({} if there is none); a file that is
    unreadable, of another format or written for settings other than ``key`` is refused."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"resume file {path}: not a readable surface resume file ({exc}); "
                          f"remove it or pass another path") from None
    if not isinstance(data, dict) or data.get("format") != RESUME_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"resume file {path}: expected format {RESUME_FORMAT!r}, got "
                          f"{got!r}; remove it or pass another path")
    saved = data.get("settings", {})
    diffs = [f"{k}: file has {saved.get(k)!r}, this run {v!r}" for k, v in key.items()
             if saved.get(k) != v]
    if diffs:
        raise ConfigError(f"resume file {path} was written for different settings ("
                          + "; ".join(diffs) + "); use another resume path or delete it")
    try:
        return {int(i): (float(l), float(a)) for i, l, a in data.get("points", [])}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"resume file {path}: malformed points ({exc})") from None


def write_resume(path: Path, key: dict, done: Points) -> None:
    """Write ``key`` and every finished point to ``path`` atomically."""
    data = {"format": RESUME_FORMAT, "settings": key,
            "points": [[i, l, a] for i, (l, a) in sorted(done.items())]}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data))
