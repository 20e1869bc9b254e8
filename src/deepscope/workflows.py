"""End-to-end steps shared by the CLI, the demo and (later) the sweep engine.

``train_and_save``: dataset spec + architecture spec + training config -> trained model ->
checkpoint holding all three, the seed, the final metrics and the initial weights.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["train_and_save", "fit_arch_to_data"]


def fit_arch_to_data(arch: Mapping, dataset) -> dict:
    """Fill ``input_shape`` and ``num_outputs`` of an architecture spec from a dataset."""
    spec = dict(arch)
    spec.setdefault("input_shape", list(dataset.input_shape))
    spec.setdefault("num_outputs", dataset.num_outputs)
    return spec


def train_and_save(arch: Mapping, data: Mapping | str, train: Mapping | None,
                   path: str | Path | None, *, progress: bool = True,
                   include_init: bool = True, callbacks: Sequence = ()):
    """Train a built-in network and (when ``path`` is given) write its checkpoint.

    Returns the :class:`deepscope.train.TrainResult`; ``result.dataset`` is the dataset used.
    """
    from deepscope.data import load_dataset
    from deepscope.nets import build_model, complete_arch_spec
    from deepscope.train import TrainConfig, train as train_fn
    from deepscope.train.checkpoint import save_checkpoint

    dataset = load_dataset(data)
    config = TrainConfig.from_dict(dict(train or {}))
    spec = complete_arch_spec(fit_arch_to_data(arch, dataset))
    model = build_model(spec, seed=config.seed)
    result = train_fn(model, dataset, config, callbacks=callbacks, progress=progress)
    if path is not None:
        save_checkpoint(path, result.model, arch=spec, dataset=dataset.spec,
                        train=config.to_dict(), seed=config.seed, metrics=result.metrics,
                        init_params=result.init_params if include_init else None)
    result.dataset = dataset
    return result
