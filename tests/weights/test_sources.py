import json
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import deepscope.weights.sources as sources
from deepscope._params import state_fingerprint
from deepscope.errors import CheckpointError, ConfigError, UntrustedPickleError
from deepscope.weights.eigs import eigenvalues
from deepscope.weights.matrices import module_matrices
from deepscope.weights.sources import iter_layer_matrices


def make_model():
    torch.manual_seed(0)
    return nn.ModuleDict(dict(
        conv=nn.Conv2d(3, 16, 3), attn=nn.MultiheadAttention(32, 4), lstm=nn.LSTM(12, 16),
        gru=nn.GRU(12, 16), emb=nn.Embedding(50, 12), norm=nn.LayerNorm(32), fc=nn.Linear(32, 10),
        tiny=nn.Linear(3, 2)))


def summary(rows):
    return [(r.name, r.N, r.M, r.num_matrices, r.skip_reason) for r in rows]


def state_dict_of(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def test_module_source_and_no_mutation():
    model = make_model()
    before = state_fingerprint(model)
    rows = list(iter_layer_matrices(model))
    assert summary(rows) == summary(module_matrices(model))
    eigenvalues(rows)
    assert state_fingerprint(model) == before


@pytest.mark.parametrize("streaming", [False, True])
def test_safetensors_matches_module_path(tmp_path, streaming):
    model = make_model()
    path = tmp_path / "w.safetensors"
    save_file(state_dict_of(model), str(path))
    file_rows = list(iter_layer_matrices(path, streaming=streaming))
    mod_rows = module_matrices(model)
    assert sorted(summary(file_rows)) == sorted(summary(mod_rows))  # names, shapes, skips
    types = {r.name: r.type for r in file_rows}
    assert types["attn.in_proj.k"] == "MultiheadAttention.k"
    assert types["attn.out_proj"] == "MultiheadAttention.out_proj"
    assert types["lstm.weight_hh_l0.f"] == "LSTM.weight_hh.f"
    assert types["gru.weight_ih_l0.n"] == "GRU.weight_ih.n"
    assert types["fc"] == types["conv"] == "Tensor"
    a, b = eigenvalues(file_rows), eigenvalues(mod_rows)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-9)


def test_streaming_reads_one_tensor_at_a_time(tmp_path, monkeypatch):
    torch.manual_seed(0)
    tensors = {f"layer{i}.weight": torch.randn(64, 32) for i in range(5)}
    tensors["layer0.bias"] = torch.randn(64)
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    reads = []
    real_open = sources.safe_open

    class Recording:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def get_tensor(self, key):
            reads.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr(sources, "safe_open", Recording)
    it = iter_layer_matrices(path, streaming=True)
    assert reads == []  # listing uses only the header
    for i, row in enumerate(it):
        assert reads == [f"layer{j}.weight" for j in range(i + 1)]
        assert row.name == f"layer{i}"
    eager = iter_layer_matrices(path)
    assert len(reads) == 10  # non-streaming: every tensor read before the first row
    ref = eigenvalues(list(eager))
    monkeypatch.undo()
    got = eigenvalues(list(iter_layer_matrices(path, streaming=True)))
    for k in ref:
        np.testing.assert_array_equal(ref[k], got[k])


def test_deepscope_checkpoint_skips_init_tensors(tmp_path):
    w = {"fc.weight": torch.randn(20, 10), "init.fc.weight": torch.randn(20, 10)}
    save_file(w, str(tmp_path / "ck.safetensors"), metadata={"deepscope_format": "1"})
    save_file(w, str(tmp_path / "plain.safetensors"))
    assert [r.name for r in iter_layer_matrices(tmp_path / "ck.safetensors")] == ["fc"]
    assert [r.name for r in iter_layer_matrices(tmp_path / "plain.safetensors")] == [
        "fc", "init.fc"]


def test_layer_filter_and_dtype_skip_on_files(tmp_path):
    w = {"a.weight": torch.randn(20, 10), "b.weight": torch.randn(30, 10),
         "position_ids": torch.arange(16).reshape(1, 16), "scale": torch.randn(10)}
    path = tmp_path / "w.safetensors"
    save_file(w, str(path))
    rows = list(iter_layer_matrices(path, min_evals=0))
    assert [(r.name, r.skip_reason) for r in rows] == [
        ("a", None), ("b", None), ("position_ids", "dtype torch.int64 is not floating point")]
    assert [r.name for r in iter_layer_matrices(path, layers="re:^b")] == ["b"]
    assert [r.name for r in iter_layer_matrices(path, layers=["a", "Tensor"])] == [
        "a", "b", "position_ids"]
    with pytest.raises(ConfigError, match="matched no layer"):
        iter_layer_matrices(path, layers=["c"])


def test_pt_state_dict_and_nested(tmp_path):
    model = make_model()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ck.pth")
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    ref = summary(module_matrices(model))
    for name in ("sd.pt", "ck.pth", "legacy.pt"):
        assert summary(iter_layer_matrices(tmp_path / name)) == ref
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="expected a state dict.*keys epoch, lr"):
        iter_layer_matrices(tmp_path / "bad.pt")


def test_pickled_module_needs_trust(tmp_path):
    model = make_model()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedPickleError, match="trust_pickle=True"):
        iter_layer_matrices(path)
    rows = list(iter_layer_matrices(path, trust_pickle=True))
    assert summary(rows) == summary(module_matrices(model))
    assert {r.type for r in rows} >= {"Conv2d", "Linear", "Embedding"}


def test_bad_files_raise_checkpoint_error(tmp_path):
    model = make_model()
    st, pt = tmp_path / "w.safetensors", tmp_path / "w.pt"
    save_file(state_dict_of(model), str(st))
    torch.save(model.state_dict(), pt)
    for src in (st, pt):
        data = src.read_bytes()
        cut = tmp_path / f"cut{src.suffix}"
        cut.write_bytes(data[:len(data) // 2])
        with pytest.raises(CheckpointError, match=str(cut).replace("\\", "\\\\")):
            iter_layer_matrices(cut)
    with pytest.raises(CheckpointError, match="no such file"):
        iter_layer_matrices(tmp_path / "missing.safetensors")
    junk = tmp_path / "weights.dat"
    junk.write_bytes(b"hello world" * 10)
    with pytest.raises(CheckpointError, match="weights.dat"):
        iter_layer_matrices(junk)
    with pytest.raises(CheckpointError, match="without model.safetensors.*found: \\(empty\\)"):
        (tmp_path / "empty").mkdir()
        iter_layer_matrices(tmp_path / "empty")
    with pytest.raises(ConfigError, match="got int"):
        iter_layer_matrices(3)


def test_hf_directory_fallbacks(tmp_path):
    model = make_model()
    ref = summary(module_matrices(model))
    sd = state_dict_of(model)
    one = tmp_path / "single"
    one.mkdir()
    save_file(sd, str(one / "model.safetensors"))
    assert sorted(summary(iter_layer_matrices(one, streaming=True))) == sorted(ref)
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save(sd, binary / "pytorch_model.bin")
    assert summary(iter_layer_matrices(binary)) == ref
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = list(sd)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for fname, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(sharded / fname))
    index = {"weight_map": {k: f for f, ks in halves.items() for k in ks}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    for streaming in (False, True):
        assert sorted(summary(iter_layer_matrices(sharded, streaming=streaming))) == sorted(ref)


def test_hf_directory_uses_transformers_when_available(tmp_path, monkeypatch):
    model = make_model()
    (tmp_path / "config.json").write_text("{}")
    save_file(state_dict_of(model), str(tmp_path / "model.safetensors"))
    calls = []

    class AutoModel:
        @staticmethod
        def from_pretrained(path, **kwargs):
            calls.append((path, kwargs))
            return model

    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(AutoModel=AutoModel))
    rows = list(iter_layer_matrices(tmp_path))
    assert calls == [(str(tmp_path), {"local_files_only": True})]
    assert rows[0].type == "Conv2d"  # module types known

    def broken(path, **kwargs):
        raise ValueError("unknown model type")

    monkeypatch.setattr(AutoModel, "from_pretrained", staticmethod(broken))
    with pytest.warns(UserWarning, match="could not load"):
        rows = list(iter_layer_matrices(tmp_path))
    assert {r.name: r.type for r in rows}["conv"] == "Tensor"
