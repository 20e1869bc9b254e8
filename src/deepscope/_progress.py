"""Progress bars for long work (tqdm to stderr; ``progress=False`` turns them off)."""
from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar, or a silent pass-through when ``enabled`` is False."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)
