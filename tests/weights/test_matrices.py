import re

import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError
from deepscope.weights.matrices import LayerMatrices, module_matrices, tensor_matrices


class Conv1D(nn.Module):
    """Stand-in for transformers.pytorch_utils.Conv1D: weight (nx, nf), y = x @ W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(12, 10))


def rows_by_name(rows):
    return {r.name: r for r in rows}


def test_conv2d_slices_and_reshape():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    (row,) = module_matrices(nn.Sequential(conv))
    assert (row.name, row.type, row.N, row.M, row.num_matrices) == ("0", "Conv2d", 32, 16, 9)
    assert row.skip_reason is None and row.num_evals == 144 and row.shape == (32, 16, 3, 3)
    mats = row.matrices
    assert mats.shape == (9, 32, 16)
    w = conv.weight.detach()
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(mats[i * 3 + j], w[:, :, i, j], rtol=0, atol=0)
    (flat,) = module_matrices(nn.Sequential(conv), conv="reshape")
    assert (flat.N, flat.M, flat.num_matrices) == (144, 32, 1)
    torch.testing.assert_close(flat.matrices[0], w.reshape(32, 144).T, rtol=0, atol=0)


def test_conv1d_conv3d_and_grouped():
    model = nn.ModuleDict(dict(c1=nn.Conv1d(8, 16, 5), c3=nn.Conv3d(4, 8, (2, 3, 3)),
                               g=nn.Conv2d(8, 16, 3, groups=4)))
    r = rows_by_name(module_matrices(model))
    assert (r["c1"].type, r["c1"].N, r["c1"].M, r["c1"].num_matrices) == ("Conv1d", 16, 8, 5)
    assert (r["c3"].type, r["c3"].N, r["c3"].M, r["c3"].num_matrices) == ("Conv3d", 8, 4, 18)
    w3 = model["c3"].weight.detach()
    torch.testing.assert_close(r["c3"].matrices[1 * 9 + 2 * 3 + 1], w3[:, :, 1, 2, 1])
    # grouped: stored (out, in/groups, k, k) sliced as is -> (16 x 2) slices
    assert (r["g"].N, r["g"].M, r["g"].num_matrices) == (16, 2, 9)


def test_conv_transpose_layout():
    ct = nn.ConvTranspose2d(8, 16, 3)  # weight (in=8, out=16, 3, 3)
    model = nn.ModuleDict(dict(ct=ct, ctg=nn.ConvTranspose2d(8, 16, 3, groups=2),
                               ct1=nn.ConvTranspose1d(12, 10, 4)))
    r = rows_by_name(module_matrices(model))
    assert (r["ct"].type, r["ct"].N, r["ct"].M, r["ct"].num_matrices) == (
        "ConvTranspose2d", 16, 8, 9)
    torch.testing.assert_close(r["ct"].matrices[4], ct.weight.detach()[:, :, 1, 1].T)
    assert (r["ctg"].N, r["ctg"].M) == (8, 8)  # (in=8, out/groups=8)
    assert (r["ct1"].type, r["ct1"].N, r["ct1"].M, r["ct1"].num_matrices) == (
        "ConvTranspose1d", 12, 10, 4)
    flat = rows_by_name(module_matrices(model, conv="reshape"))["ct"]
    assert (flat.N, flat.M, flat.num_matrices) == (144, 8, 1)


def test_multihead_attention_packed_and_separate():
    mha = nn.MultiheadAttention(64, 4)
    rows = module_matrices(nn.ModuleDict(dict(attn=mha)))
    assert [r.name for r in rows] == ["attn.in_proj.q", "attn.in_proj.k", "attn.in_proj.v",
                                     "attn.out_proj"]
    assert [r.type for r in rows] == ["MultiheadAttention.q", "MultiheadAttention.k",
                                     "MultiheadAttention.v", "MultiheadAttention.out_proj"]
    assert all((r.N, r.M, r.num_matrices) == (64, 64, 1) for r in rows)
    w = mha.in_proj_weight.detach()
    for i, r in enumerate(rows[:3]):
        torch.testing.assert_close(r.matrices[0], w[64 * i:64 * (i + 1)], rtol=0, atol=0)
    torch.testing.assert_close(rows[3].matrices[0], mha.out_proj.weight.detach())
    sep = module_matrices(nn.ModuleDict(dict(a=nn.MultiheadAttention(64, 4, kdim=32, vdim=16))))
    assert [(r.name, r.N, r.M) for r in sep] == [
        ("a.in_proj.q", 64, 64), ("a.in_proj.k", 64, 32), ("a.in_proj.v", 64, 16),
        ("a.out_proj", 64, 64)]


def test_transformer_layer_counts_out_proj_once():
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64)
    names = [r.name for r in module_matrices(layer)]
    assert names == ["self_attn.in_proj.q", "self_attn.in_proj.k", "self_attn.in_proj.v",
                     "self_attn.out_proj", "linear1", "linear2"]


def test_lstm_gru_rnn_gates():
    lstm = nn.LSTM(10, 20)
    rows = module_matrices(nn.ModuleDict(dict(lstm=lstm)))
    assert [r.name for r in rows] == [f"lstm.weight_{k}_l0.{g}" for k in ("ih", "hh")
                                      for g in "ifgo"]
    assert [(r.N, r.M) for r in rows] == [(20, 10)] * 4 + [(20, 20)] * 4
    assert rows[2].type == "LSTM.weight_ih.g"
    torch.testing.assert_close(rows[5].matrices[0], lstm.weight_hh_l0.detach()[20:40])
    gru = module_matrices(nn.ModuleDict(dict(gru=nn.GRU(10, 20, bidirectional=True))))
    assert len(gru) == 12 and gru[-1].name == "gru.weight_hh_l0_reverse.n"
    assert gru[-1].type == "GRU.weight_hh.n"
    rnn = module_matrices(nn.ModuleDict(dict(rnn=nn.RNN(10, 20))))
    assert [(r.name, r.type, r.N, r.M) for r in rnn] == [
        ("rnn.weight_ih_l0", "RNN.weight_ih", 20, 10),
        ("rnn.weight_hh_l0", "RNN.weight_hh", 20, 20)]
    proj = rows_by_name(module_matrices(nn.ModuleDict(dict(p=nn.LSTM(10, 20, proj_size=12)))))
    assert proj["p.weight_hr_l0"].type == "LSTM.weight_hr"
    assert (proj["p.weight_hh_l0.i"].N, proj["p.weight_hh_l0.i"].M) == (20, 12)


def test_linear_embedding_hf_conv1d():
    model = nn.ModuleDict(dict(emb=nn.Embedding(100, 16), hf=Conv1D(30, 20), fc=nn.Linear(40, 12),
                               bag=nn.EmbeddingBag(50, 9)))
    r = rows_by_name(module_matrices(model))
    assert (r["emb"].type, r["emb"].N, r["emb"].M) == ("Embedding", 100, 16)
    assert (r["hf"].type, r["hf"].N, r["hf"].M) == ("HFConv1D", 30, 20)
    torch.testing.assert_close(r["hf"].matrices[0], model["hf"].weight.detach().T)
    assert (r["fc"].type, r["fc"].N, r["fc"].M) == ("Linear", 40, 12)
    assert r["bag"].type == "EmbeddingBag" and r["bag"].skip_reason is None


def test_norms_give_no_rows_and_unsupported_are_listed():
    model = nn.ModuleDict(dict(bn=nn.BatchNorm2d(8), ln=nn.LayerNorm(8), bil=nn.Bilinear(3, 4, 5),
                               cu=Custom()))
    rows = module_matrices(model)
    assert [r.name for r in rows] == ["bil", "cu.W"]
    assert rows[0].skip_reason == "unsupported module type Bilinear"
    assert rows[1].skip_reason == "unsupported module type Custom (parameter 'W')"
    assert rows[0].matrices is None


def test_tiny_and_bad_matrices_are_listed_with_reason():
    bad = nn.Linear(20, 10)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    model = nn.ModuleDict(dict(tiny=nn.Linear(4, 3), thin=nn.Linear(100, 3), bad=bad,
                               big=nn.Linear(300, 10)))
    r = rows_by_name(module_matrices(model))
    assert r["tiny"].skip_reason == "num_evals = num_matrices * M = 1 * 3 = 3 < min_evals 8"
    assert r["thin"].skip_reason == "num_evals = num_matrices * M = 1 * 3 = 3 < min_evals 8"
    assert r["bad"].skip_reason == "not finite: 1 NaN/inf entries" and r["bad"].matrices is None
    assert r["big"].skip_reason is None
    r = rows_by_name(module_matrices(model, min_dim=5, min_evals=0, max_dim=200))
    assert r["thin"].skip_reason == "min(N, M) = 3 < min_dim 5"
    assert r["big"].skip_reason == "max(N, M) = 300 > max_dim 200"
    mha = nn.MultiheadAttention(16, 2)
    with torch.no_grad():
        mha.in_proj_weight[20, 0] = float("inf")  # inside the k block only
    reasons = [r.skip_reason for r in module_matrices(nn.ModuleDict(dict(a=mha)))]
    assert reasons == [None, "not finite: 1 NaN/inf entries", None, None]
    # a 3-channel 3x3 conv has M = 3 but 27 pooled eigenvalues: kept (weightwatcher's rule)
    (rgb,) = module_matrices(nn.Sequential(nn.Conv2d(3, 16, 3)))
    assert rgb.skip_reason is None and rgb.num_evals == 27


def test_tied_weights_listed_once():
    emb = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = emb.weight
    r = rows_by_name(module_matrices(nn.ModuleDict(dict(emb=emb, head=head))))
    assert r["emb"].skip_reason is None
    assert r["head"].skip_reason == "weight shared with 'emb' (tied), analyzed there"
    (head,) = module_matrices(nn.ModuleDict(dict(emb=emb, head=head)), layers="head")
    assert head.skip_reason is None  # its owner is not selected: analyzed here


def _zoo():
    torch.manual_seed(0)
    return nn.ModuleDict(dict(
        features=nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3)),
        attn=nn.MultiheadAttention(32, 4), lstm=nn.LSTM(16, 16), fc=nn.Linear(32, 10)))


def test_layer_filter_names_regex_types():
    model = _zoo()
    names = lambda sel: [r.name for r in module_matrices(model, layers=sel)]  # noqa: E731
    assert names(["features.0", "fc"]) == ["features.0", "fc"]
    assert names("attn") == ["attn.in_proj.q", "attn.in_proj.k", "attn.in_proj.v",
                             "attn.out_proj"]
    assert names("features") == ["features.0", "features.2"]  # a container: its submodules
    assert names("re:^features") == ["features.0", "features.2"]
    assert names(re.compile(r"\.in_proj\.[qk]$")) == ["attn.in_proj.q", "attn.in_proj.k"]
    assert names(nn.Conv2d) == ["features.0", "features.2"]
    assert len(names(nn.MultiheadAttention)) == 4  # q, k, v and out_proj
    assert names("Linear") == ["attn.out_proj", "fc"]  # out_proj's class is a Linear subclass
    assert names("MultiheadAttention.v") == ["attn.in_proj.v"]
    assert len(names("LSTM")) == 8
    assert names(["fc", nn.Conv2d, "re:hh_l0\\.o$"]) == [
        "features.0", "features.2", "lstm.weight_hh_l0.o", "fc"]


def test_layer_filter_errors():
    model = _zoo()
    with pytest.raises(ConfigError, match=r"\['fcc'\] matched no layer.*expected one of: "):
        module_matrices(model, layers=["fcc"])
    with pytest.raises(ConfigError, match=r"\['feat'\] matched no layer"):
        module_matrices(model, layers="feat")  # module prefixes match at dots only
    with pytest.raises(ConfigError, match="invalid regex"):
        module_matrices(model, layers="re:(")
    with pytest.raises(ConfigError, match="got 3"):
        module_matrices(model, layers=[3])
    with pytest.raises(ConfigError, match="conv mode 'flat'"):
        module_matrices(model, conv="flat")
    with pytest.raises(ConfigError, match="min_dim must be an integer >= 0, got -1"):
        module_matrices(model, min_dim=-1)
    with pytest.raises(ConfigError, match="expected an nn.Module, got dict"):
        module_matrices({})


def test_model_is_not_mutated():
    model = _zoo()
    model.add_module("sn", nn.utils.parametrizations.spectral_norm(nn.Linear(20, 30)))
    model.train()
    model.fc.weight.requires_grad_(False)
    before = state_fingerprint(model)
    rows = module_matrices(model)
    for r in rows:
        if r.matrices is not None:
            r.matrices.sum()
    assert state_fingerprint(model) == before
    sn = rows_by_name(rows)["sn"]
    assert sn.type == "Linear" and (sn.N, sn.M) == (30, 20)
    assert not any(".parametrizations" in r.name for r in rows)
    assert all(not r.matrices.requires_grad for r in rows if r.matrices is not None)


def test_tensor_matrices():
    row = tensor_matrices("w", torch.randn(10, 40))
    assert isinstance(row, LayerMatrices)
    assert (row.type, row.N, row.M, row.num_matrices) == ("Tensor", 40, 10, 1)
    assert row.skip_reason is None
    conv = tensor_matrices("c", torch.randn(32, 16, 3, 3))
    assert (conv.N, conv.M, conv.num_matrices) == (32, 16, 9)
    assert tensor_matrices("c", torch.randn(32, 16, 3, 3), conv="reshape").N == 144
    assert tensor_matrices("b", torch.randn(10)).skip_reason == "1-D tensor: not a matrix"
    assert "6-D tensor" in tensor_matrices("x", torch.randn(*[2] * 6)).skip_reason
    ids = tensor_matrices("position_ids", torch.arange(512).reshape(1, 512), min_evals=0)
    assert ids.skip_reason == "dtype torch.int64 is not floating point"
    with pytest.raises(ConfigError, match="expected a torch.Tensor, got list"):
        tensor_matrices("x", [[1.0]])
