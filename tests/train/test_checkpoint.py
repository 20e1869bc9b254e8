"""Checkpoint round trip, corrupt/truncated files, user-model loading."""
import json
import struct

import pytest
import torch
from torch import nn

import deepscope
from deepscope.errors import CheckpointError, ConfigError, UntrustedPickleError
from deepscope.nets import build_model, load_model
from deepscope.train.checkpoint import (INIT_PREFIX, is_checkpoint, load_checkpoint,
                                        save_checkpoint)

SPEC = {"arch": "mlp", "widths": [16, 8], "input_shape": [64], "num_outputs": 10}


@pytest.fixture
def model():
    return build_model(SPEC, seed=3)


def _equal_states(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_bitwise_and_spec(tmp_path, model):
    init = {k: v.clone() * 0.5 for k, v in model.named_parameters()}
    path = save_checkpoint(tmp_path / "m.safetensors", model, dataset={"name": "digits"},
                           train={"optimizer": "sgd", "lr": 0.1}, seed=3,
                           metrics={"test_acc": 0.9}, init_params=init)
    assert is_checkpoint(path)
    ck = load_checkpoint(path)
    assert _equal_states(ck.model, model)
    assert ck.arch == model.deepscope_spec
    assert ck.dataset_spec == {"name": "digits"}
    assert ck.train_config == {"optimizer": "sgd", "lr": 0.1}
    assert ck.seed == 3 and ck.metrics == {"test_acc": 0.9}
    assert set(ck.init_params) == set(init)
    assert all(torch.equal(ck.init_params[k], init[k]) for k in init)
    assert _equal_states(ck.init_model(), _with(model, init))
    assert deepscope.load(path).arch == ck.arch
    assert ck.loss_name == "cross_entropy"


def _with(model, params):
    m = build_model(model.deepscope_spec)
    sd = m.state_dict()
    sd.update(params)
    m.load_state_dict(sd)
    return m


def test_buffers_round_trip(tmp_path):
    m = build_model({"arch": "mlp", "widths": [8], "batchnorm": True,
                     "input_shape": [4], "num_outputs": 2}, seed=0)
    m.train()
    m(torch.randn(32, 4))  # move the running stats
    ck = load_checkpoint(save_checkpoint(tmp_path / "bn.safetensors", m))
    assert _equal_states(ck.model, m)
    assert ck.init_params is None
    with pytest.raises(CheckpointError, match="no initial weights"):
        ck.init_model()


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 3):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(bad)


def test_corrupt_header_and_empty_and_missing(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", bytes(data[:8]))[0]
    data[8:8 + n] = b"{" + b"x" * (n - 1)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)


def test_weights_that_do_not_fit_the_spec(tmp_path, model):
    from safetensors.torch import save_file
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["fc1.weight"] = torch.zeros(3, 3)
    meta = {"deepscope_format": "1", "arch": json.dumps(model.deepscope_spec)}
    path = tmp_path / "mismatch.safetensors"
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_bare_safetensors_is_not_a_checkpoint(tmp_path, model):
    from safetensors.torch import save_file
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert not is_checkpoint(path)
    with pytest.raises(CheckpointError, match="without deepscope metadata"):
        load_checkpoint(path)
    # ...but it loads as a user model with a spec
    m = load_model(path, spec=model.deepscope_spec)
    assert _equal_states(m, model)


def test_pt_state_dict_with_spec_or_factory(tmp_path, model):
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    assert _equal_states(load_model(path, spec=model.deepscope_spec), model)
    assert _equal_states(load_model(path, factory=lambda: build_model(SPEC)), model)
    with pytest.raises(ConfigError, match="spec"):
        load_model(path)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    assert _equal_states(load_model(tmp_path / "wrapped.pt", spec=model.deepscope_spec), model)


def test_factory_string(tmp_path, model):
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ConfigError, match="package.module:function"):
        load_model(path, factory="not-a-factory")
    with pytest.raises(ConfigError, match="cannot import"):
        load_model(path, factory="no_such_module_xyz:make")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


def test_pickled_module_needs_opt_in(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_Tiny(), path)
    with pytest.raises(UntrustedPickleError, match="trust_pickle"):
        load_model(path)
    m = load_model(path, trust_pickle=True)
    assert isinstance(m, _Tiny)


def test_init_prefix_constant():
    assert INIT_PREFIX == "init."


def test_hf_directory_without_transformers_says_how_to_install(tmp_path, monkeypatch):
    import builtins
    (tmp_path / "config.json").write_text("{}")
    real_import = builtins.__import__

    def no_transformers(name, *a, **k):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ConfigError, match=r"deepscope\[hf\]"):
        load_model(tmp_path)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path)
