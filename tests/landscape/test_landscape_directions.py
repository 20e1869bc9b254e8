"""Filter-normalized and PCA-trajectory directions (deepscope.landscape.directions)."""
import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ShapeError
from deepscope.landscape.directions import (as_direction, bn_parameter_names,
                                            filter_normalize, filter_normalized_directions,
                                            pca_directions)
from deepscope.nets import build_model, complete_arch_spec


def resnet_bn():
    spec = complete_arch_spec({"arch": "resnet", "blocks": [1, 1], "width": 4,
                               "batchnorm": True, "input_shape": [1, 8, 8], "num_outputs": 10})
    return build_model(spec, seed=0)


def cnn():
    spec = complete_arch_spec({"arch": "cnn", "channels": [6, 8], "fc": [16, 12],
                               "input_shape": [1, 8, 8], "num_outputs": 10})
    return build_model(spec, seed=1)


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.ln = nn.LayerNorm(6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.ln(self.emb(x)).mean(1))


def filter_norms(t):
    return t.reshape(t.shape[0], -1).norm(dim=1)


@pytest.mark.parametrize("make", [cnn, resnet_bn, WithEmbedding])
def test_filter_norms_exact_and_bias_bn_zero(make):
    model = make()
    fp = state_fingerprint(model)
    bn = bn_parameter_names(model)
    d1, d2 = filter_normalized_directions(model, 2, seed=3)
    assert state_fingerprint(model) == fp
    checked = 0
    for name, p in model.named_parameters():
        for d in (d1, d2):
            assert d[name].shape == p.shape and d[name].dtype == p.dtype
            if name in bn or p.dim() <= 1:
                assert torch.count_nonzero(d[name]) == 0, name
            else:
                ref = filter_norms(p.detach())
                got = filter_norms(d[name])
                torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
                checked += 1
    assert checked >= 4
    if make is resnet_bn:
        assert len(bn) > 0 and all(name.split(".")[-1] in ("weight", "bias") for name in bn)


def test_include_bias_and_bn_normalize_whole_vectors():
    model = resnet_bn()
    bn = bn_parameter_names(model)
    (d,) = filter_normalized_directions(model, 1, seed=0, include_bias=True, include_bn=True)
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            assert name in bn or name.endswith("bias")
            assert float(d[name].norm()) == pytest.approx(float(p.detach().norm()), rel=1e-6)
    (d_bn_only,) = filter_normalized_directions(model, 1, seed=0, include_bn=True)
    head_bias = "head.bias"
    assert torch.count_nonzero(d_bn_only[head_bias]) == 0
    # BatchNorm scales (init 1) move; shifts initialized at 0 have norm 0, so zero direction
    assert all(torch.count_nonzero(d_bn_only[n]) > 0 for n in bn if n.endswith("weight"))


def test_embedding_rows_and_layernorm():
    model = WithEmbedding()
    (d,) = filter_normalized_directions(model, 1, seed=1, include_bias=True)
    torch.testing.assert_close(filter_norms(d["emb.weight"]),
                               filter_norms(model.emb.weight.detach()), rtol=1e-6, atol=1e-7)
    assert float(d["ln.weight"].norm()) == pytest.approx(float(model.ln.weight.detach().norm()),
                                                         rel=1e-6)


def test_seeded_reproducible_and_seeds_differ():
    model = cnn()
    a = filter_normalized_directions(model, 2, seed=7)
    b = filter_normalized_directions(model, 2, seed=7)
    c = filter_normalized_directions(model, 2, seed=8)
    (first,) = filter_normalized_directions(model, 1, seed=7)
    for name in a[0]:
        assert torch.equal(a[0][name], b[0][name]) and torch.equal(a[1][name], b[1][name])
        assert torch.equal(first[name], a[0][name])
    w = "features.conv2.weight"
    assert not torch.allclose(a[0][w], c[0][w])
    assert not torch.allclose(a[0][w], a[1][w])


def test_gaussian_signs_and_near_orthogonal():
    """Unlike U[0,1) draws (loss-landscapes), Gaussian directions have both signs and two
    draws are nearly orthogonal: |cos| ~ 1/sqrt(dim)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    d1, d2 = filter_normalized_directions(model, 2, seed=0)
    v1 = torch.cat([t.reshape(-1) for t in d1.values()]).double()
    v2 = torch.cat([t.reshape(-1) for t in d2.values()]).double()
    frac_pos = float((v1[v1 != 0] > 0).double().mean())
    assert 0.48 < frac_pos < 0.52
    cos = float(v1 @ v2 / (v1.norm() * v2.norm()))
    assert abs(cos) < 5 / np.sqrt(v1.numel())


def test_zero_filter_gets_zero_direction():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight[1].zero_()
    (d,) = filter_normalized_directions(lin, 1, seed=0)
    assert torch.count_nonzero(d["weight"][1]) == 0
    assert torch.all(d["weight"][0] != 0)


def test_filter_normalize_matches_loop_reference():
    torch.manual_seed(1)
    ref = {"w": torch.randn(5, 3, 2, 2), "b": torch.randn(5)}
    raw = {"w": torch.randn(5, 3, 2, 2), "b": torch.randn(5)}
    out = filter_normalize(raw, ref, include_bias=True)
    for i in range(5):
        expect = raw["w"][i] * ref["w"][i].norm() / raw["w"][i].norm()
        torch.testing.assert_close(out["w"][i], expect, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out["b"], raw["b"] * ref["b"].norm() / raw["b"].norm())
    with pytest.raises(ShapeError):
        filter_normalize({"w": torch.randn(5, 3), "b": torch.randn(5)}, ref)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        filter_normalized_directions(cnn(), 0)
    with pytest.raises(ConfigError):
        filter_normalized_directions(nn.ReLU(), 1)
    with pytest.raises(ConfigError):
        filter_normalized_directions(cnn(), 1, seed=1.5)


def test_as_direction_flat_and_dict():
    model = cnn()
    ref = {n: p.detach() for n, p in model.named_parameters()}
    total = sum(p.numel() for p in ref.values())
    flat = torch.arange(total, dtype=torch.float32)
    d = as_direction(flat, ref)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in d.values()]), flat)
    part = as_direction({"classifier.out.bias": torch.ones(10)}, ref)
    assert float(part["classifier.out.bias"].sum()) == 10
    assert all(torch.count_nonzero(v) == 0 for k, v in part.items() if k != "classifier.out.bias")
    with pytest.raises(ShapeError):
        as_direction(torch.zeros(total + 1), ref)
    with pytest.raises(ShapeError):
        as_direction({"nope": torch.zeros(3)}, ref)
    with pytest.raises(ShapeError):
        as_direction({"classifier.out.bias": torch.zeros(3)}, ref)


# ------------------------------------------------------------------------------ PCA
def planted(n_points=9, seed=0):
    """A trajectory theta_i = theta_final + alpha_i u + beta_i v in a known plane."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    dim = sum(p.numel() for p in final.values())
    q, _ = torch.linalg.qr(torch.randn(dim, 2, dtype=torch.float64))
    u, v = q[:, 0], q[:, 1]
    t = torch.linspace(0, 1, n_points, dtype=torch.float64)
    alpha, beta = 3.0 * (1 - t) ** 2, 1.0 * torch.sin(3 * t) * (1 - t)
    traj = []
    for a, b in zip(alpha, beta):
        vec = a * u + b * v
        p, i = {}, 0
        for name, w in final.items():
            p[name] = (w.double() + vec[i:i + w.numel()].reshape(w.shape)).float()
            i += w.numel()
        traj.append(p)
    return model, traj, u, v


def flat(d):
    return torch.cat([t.reshape(-1).double() for t in d.values()])


def test_pca_orthonormal_and_recovers_planted_plane():
    model, traj, u, v = planted()
    fp = state_fingerprint(model)
    res = pca_directions(traj, model, 2)
    assert state_fingerprint(model) == fp
    D = torch.stack([flat(d) for d in res.directions])
    torch.testing.assert_close(D @ D.T, torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0)
    # u and v lie in the span of the recovered directions
    for w in (u, v):
        assert float((D @ w).norm()) == pytest.approx(1.0, abs=1e-5)
    assert sum(res.explained_variance_ratio) == pytest.approx(1.0, abs=1e-6)
    assert res.explained_variance_ratio[0] >= res.explained_variance_ratio[1]
    # projected coordinates: (theta_i - theta_final) . d_k; the last point is the origin
    final = {n: p.detach() for n, p in model.named_parameters()}
    for i, p in enumerate(traj):
        diff = flat({k: p[k] - final[k] for k in p})
        np.testing.assert_allclose(res.coords[i], (D @ diff).numpy(), atol=1e-5)
    assert res.coords[0][0] >= 0 and res.coords[0][1] >= 0  # sign convention
    np.testing.assert_allclose(res.coords[-1], [0.0, 0.0], atol=1e-6)


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    final = {n: p.detach() for n, p in model.named_parameters()}
    traj = [{n: p + 0.1 * torch.randn_like(p) * (k + 1) for n, p in final.items()}
            for k in range(7)]
    res = pca_directions(traj, final, 2)
    M = np.stack([flat({n: t[n] - final[n] for n in final}).numpy() for t in traj])
    sk = PCA(n_components=2).fit(M)
    np.testing.assert_allclose(res.explained_variance, sk.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(res.explained_variance_ratio, sk.explained_variance_ratio_,
                               rtol=1e-5)
    for k in range(2):
        got = flat(res.directions[k]).numpy()
        assert abs(abs(got @ sk.components_[k]) - 1.0) < 1e-5


def test_pca_exclude_bias_and_errors(tmp_path):
    model, traj, _, _ = planted()
    res = pca_directions(traj, model, 2, include_bias=False)
    for d in res.directions:
        assert torch.count_nonzero(d["0.bias"]) == 0 and torch.count_nonzero(d["2.bias"]) == 0
        assert torch.count_nonzero(d["0.weight"]) > 0
    with pytest.raises(ConfigError, match="at least 3"):
        pca_directions(traj[:2], model, 2)
    with pytest.raises(ConfigError, match="empty"):
        pca_directions([], model, 2)
    with pytest.raises(ConfigError):
        pca_directions(model, model, 2)
    bad = dict(traj[0])
    bad["0.weight"] = torch.zeros(2, 2)
    with pytest.raises(ShapeError, match="0.weight"):
        pca_directions([bad, *traj], model, 2)
    # a straight-line trajectory spans one dimension only
    final = {n: p.detach() for n, p in model.named_parameters()}
    line = [{n: p + s * torch.ones_like(p) for n, p in final.items()} for s in (1.0, 2.0, 3.0)]
    with pytest.raises(ConfigError, match="fewer than 2"):
        pca_directions(line, final, 2)
    # modules and weights files are accepted as trajectory points
    from safetensors.torch import save_file
    path = tmp_path / "p.safetensors"
    save_file({k: v.contiguous() for k, v in traj[0].items()}, str(path))
    m1 = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    m1.load_state_dict(traj[1])
    res2 = pca_directions([path, m1, *traj[2:]], model, 2)
    np.testing.assert_allclose(res2.coords, pca_directions(traj, model, 2).coords, atol=1e-5)
