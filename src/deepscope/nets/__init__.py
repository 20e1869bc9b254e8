"""Built-in architectures (MLP, MiniAlexNet CNN, ResNet, LSTM) built from JSON specs.

``build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10}, seed=0)`` returns an
``nn.Module`` with the completed spec attached as ``model.deepscope_spec``; see
:func:`complete_arch_spec` for the keys of each architecture.
"""
from deepscope.nets.build import build_model, count_parameters
from deepscope.nets.init import initialize
from deepscope.nets.loading import load_model, resolve_factory
from deepscope.nets.spec import ACTIVATIONS, ARCHITECTURES, INITS, complete_arch_spec

__all__ = [
    "build_model",
    "complete_arch_spec",
    "count_parameters",
    "initialize",
    "load_model",
    "resolve_factory",
    "ARCHITECTURES",
    "INITS",
    "ACTIVATIONS",
]
