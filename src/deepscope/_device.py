"""``resolve_device``: a user's device argument -> ``torch.device``, or a clear ConfigError."""
from __future__ import annotations

import torch

from deepscope.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device, default=None) -> torch.device:
    """``torch.device(device)`` (``default`` when ``device`` is None); a bad name, or CUDA on a
    machine without it, raises ConfigError (the CLI's exit 2) instead of a torch error."""
    if device is None:
        device = default if default is not None else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"device {device!r} is not a torch device: expected one like "
                          f"'cpu' or 'cuda:0'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(dev)!r} requested but CUDA is not available "
                          f"(expected 'cpu' here)")
    if dev.type not in ("cpu", "cuda"):
        try:  # other backends (mps, xpu, ...): usable only if a tensor can be made there
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as e:
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ConfigError(f"device {str(dev)!r} cannot be used here: {first}") from None
    return dev
