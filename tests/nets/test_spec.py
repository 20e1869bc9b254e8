"""Spec completion and validation: defaults, canonical JSON form, clear errors."""
import copy
import json

import numpy as np
import pytest

from deepscope.errors import ConfigError, DeepscopeError, ShapeError
from deepscope.nets import ARCHITECTURES, complete_arch_spec


def minimal(arch, shape=(1, 8, 8), k=10, **kw):
    return {"arch": arch, "input_shape": list(shape), "num_outputs": k, **kw}


DEFAULTS = {
    "mlp": {"init": "default", "widths": [512, 512], "activation": "relu", "dropout": 0.0,
            "batchnorm": False, "bias": True},
    "cnn": {"init": "default", "width": 1.0, "channels": [96, 256], "fc": [384, 192],
            "activation": "relu", "dropout": 0.0, "batchnorm": False},
    "resnet": {"init": "default", "blocks": [2, 2, 2], "width": 16, "activation": "relu",
               "batchnorm": True},
    "lstm": {"init": "default", "hidden": 64, "layers": 1, "bidirectional": False,
             "dropout": 0.0},
}


def test_architectures_listed():
    assert ARCHITECTURES == ("mlp", "cnn", "resnet", "lstm")
    assert set(DEFAULTS) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_defaults_filled(arch):
    full = complete_arch_spec(minimal(arch))
    assert full == {"arch": arch, "input_shape": [1, 8, 8], "num_outputs": 10, **DEFAULTS[arch]}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_json_idempotent_and_input_untouched(arch):
    spec = {"arch": arch, "input_shape": (1, 40), "num_outputs": np.int64(3)}
    before = copy.deepcopy(spec)
    full = complete_arch_spec(spec)
    assert spec == before
    assert full is not spec
    text = json.dumps(full)
    assert json.loads(text) == full
    assert isinstance(full["input_shape"], list) and type(full["num_outputs"]) is int
    assert complete_arch_spec(full) == full
    assert complete_arch_spec(json.loads(text)) == full


def test_completed_lists_are_fresh_copies():
    a = complete_arch_spec(minimal("mlp"))
    a["widths"].append(7)
    assert complete_arch_spec(minimal("mlp"))["widths"] == [512, 512]


def test_cnn_width_scales_and_explicit_sizes_override():
    full = complete_arch_spec(minimal("cnn", width=0.5))
    assert full["channels"] == [48, 128] and full["fc"] == [192, 96]
    tiny = complete_arch_spec(minimal("cnn", width=0.001))
    assert tiny["channels"] == [1, 1] and tiny["fc"] == [1, 1]
    over = complete_arch_spec(minimal("cnn", width=2, channels=[4, 8]))
    assert over["channels"] == [4, 8] and over["fc"] == [768, 384]
    assert over["width"] == 2.0 and isinstance(over["width"], float)


def test_mlp_empty_widths_is_a_linear_model():
    assert complete_arch_spec(minimal("mlp", widths=[]))["widths"] == []


def test_unknown_arch():
    with pytest.raises(ConfigError, match="unknown architecture 'vgg'.*mlp"):
        complete_arch_spec(minimal("vgg"))


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'depth'"):
        complete_arch_spec(minimal("resnet", depth=3))
    # a key of another architecture is unknown too
    with pytest.raises(ConfigError, match="'widths'"):
        complete_arch_spec(minimal("lstm", widths=[3]))


@pytest.mark.parametrize("bad", [[512, 0], [512, -1], "512", 512, [2.5], [True], None])
def test_bad_widths(bad):
    with pytest.raises(ConfigError, match="widths.*expected a list of positive ints"):
        complete_arch_spec(minimal("mlp", widths=bad))


@pytest.mark.parametrize("arch,key,value", [
    ("mlp", "activation", "sigmoid"),
    ("mlp", "dropout", 1.0),
    ("mlp", "dropout", "0.1"),
    ("mlp", "batchnorm", 1),
    ("mlp", "bias", "yes"),
    ("mlp", "init", "xavier"),
    ("cnn", "width", 0),
    ("cnn", "width", float("nan")),
    ("cnn", "channels", [8]),
    ("cnn", "fc", [8, 8, 8]),
    ("resnet", "blocks", []),
    ("resnet", "width", 16.0),
    ("lstm", "hidden", 0),
    ("lstm", "layers", True),
    ("lstm", "bidirectional", "no"),
    ("mlp", "num_outputs", 0),
    ("mlp", "input_shape", [8, 0]),
    ("mlp", "input_shape", []),
])
def test_bad_values(arch, key, value):
    spec = minimal(arch)
    spec[key] = value
    with pytest.raises(ConfigError) as info:
        complete_arch_spec(spec)
    msg = str(info.value)
    assert key in msg or repr(value) in msg


def test_missing_required_and_not_a_dict():
    with pytest.raises(ConfigError, match="missing required key.*'num_outputs'"):
        complete_arch_spec({"arch": "mlp", "input_shape": [4]})
    with pytest.raises(ConfigError, match="expected a dict, got list"):
        complete_arch_spec(["mlp"])


@pytest.mark.parametrize("arch", ["cnn", "resnet", "lstm"])
def test_rank_checked(arch):
    with pytest.raises(ShapeError, match=r"got \[1, 2, 3, 4\]"):
        complete_arch_spec(minimal(arch, shape=(1, 2, 3, 4)))
    # the MLP flattens inputs of any rank
    assert complete_arch_spec(minimal("mlp", shape=(1, 2, 3, 4)))["input_shape"] == [1, 2, 3, 4]


def test_errors_are_deepscope_errors():
    with pytest.raises(DeepscopeError):
        complete_arch_spec(minimal("mlp", widths="x"))
