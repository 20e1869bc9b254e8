import functools

import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ShapeError
from deepscope.weights.eigs import eigenvalues, randomize_matrix
from deepscope.weights.matrices import module_matrices, tensor_matrices


def numpy_evals(mats):
    """Reference: float64 numpy SVD of every slice, squared, pooled, ascending."""
    mats = np.asarray(mats, dtype=np.float64)
    return np.sort(np.concatenate([np.linalg.svd(w, compute_uv=False) ** 2 for w in mats]))


@functools.lru_cache(maxsize=None)
def random_case(shape):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(*shape, generator=g) / shape[0] ** 0.5
    return w, numpy_evals(w.numpy()[None])


@pytest.mark.parametrize("shape", [(512, 512), (4096, 512)])
@pytest.mark.parametrize("method", ["auto", "svd", "gram"])
def test_float32_accuracy_against_numpy_float64(shape, method):
    w, ref = random_case(shape)
    got = eigenvalues([tensor_matrices("w", w)], method=method)["w"]
    assert got.dtype == np.float64 and got.shape == (shape[1],)
    assert np.all(np.diff(got) >= 0)
    top = np.abs(got[-10:] - ref[-10:]) / ref[-10:]
    assert top.max() < 1e-4
    assert np.abs(got - ref).max() / ref[-1] < 1e-4


def test_float64_is_near_exact_and_svd_keeps_small_eigenvalues():
    g = torch.Generator().manual_seed(2)
    # tall, rank 8 + tiny noise: the float32 Gram loses the small eigenvalues, SVD does not
    w = (torch.randn(1024, 8, generator=g) @ torch.randn(8, 256, generator=g)
         + 1e-3 * torch.randn(1024, 256, generator=g))
    row = tensor_matrices("w", w)
    ref = numpy_evals(w.numpy()[None])
    f64 = eigenvalues([row], dtype=torch.float64)["w"]
    assert np.abs(f64 - ref).max() / ref[-1] < 1e-12
    np.testing.assert_allclose(f64[:-8], ref[:-8], rtol=1e-6)
    svd = eigenvalues([row], method="svd")["w"]
    np.testing.assert_allclose(svd[:-8], ref[:-8], rtol=1e-2)
    gram = eigenvalues([row], method="gram")["w"]  # documented noise floor ~eps32 * lambda_max
    assert np.abs(gram - ref).max() / ref[-1] < 1e-5


def test_conv_slices_are_pooled():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    (row,) = module_matrices(nn.Sequential(conv))
    got = eigenvalues([row], dtype=torch.float64)["0"]
    w = conv.weight.detach().numpy()
    ref = numpy_evals([w[:, :, i, j].T for i in range(3) for j in range(3)])
    assert got.shape == (9 * 16,)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * ref[-1])


def test_batched_equals_unbatched_and_device_argument():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Conv2d(64, 64, 3),
                          nn.Linear(64, 256), nn.Embedding(300, 64), nn.Linear(4, 3))
    rows = module_matrices(model)
    a = eigenvalues(rows)
    b = eigenvalues(rows, batch=False)
    c = eigenvalues(rows, device="cpu", method="svd")
    assert list(a) == ["0", "1", "2", "3", "4"]  # the tiny Linear(4, 3) is skipped
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6 * a[name][-1])
        np.testing.assert_allclose(a[name], c[name], rtol=1e-4, atol=1e-6 * a[name][-1])
        r = next(r for r in rows if r.name == name)
        assert a[name].shape == (r.num_evals,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rows = [tensor_matrices(f"w{i}", torch.randn(256, 128)) for i in range(3)]
    cpu = eigenvalues(rows)
    gpu = eigenvalues(rows, device="cuda")
    for k in cpu:
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-4, atol=1e-6 * cpu[k][-1])


def test_eigenvalues_input_errors():
    row = tensor_matrices("w", torch.randn(20, 10))
    with pytest.raises(ConfigError, match="dtype must be torch.float32 or torch.float64"):
        eigenvalues([row], dtype=torch.float16)
    with pytest.raises(ConfigError, match="unknown eigenvalue method 'qr'"):
        eigenvalues([row], method="qr")
    with pytest.raises(ConfigError, match="duplicate layer name 'w'"):
        eigenvalues([row, row])
    with pytest.raises(ConfigError, match="must hold LayerMatrices, got Tensor"):
        eigenvalues([torch.zeros(3, 3)])
    assert list(eigenvalues(row)) == ["w"]
    assert eigenvalues([tensor_matrices("b", torch.randn(5))]) == {}


def test_randomize_matrix():
    w = torch.randn(30, 20)
    keep = w.clone()
    a = randomize_matrix(w, 7)
    b = randomize_matrix(w, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, w) and torch.equal(w, keep)
    assert torch.equal(a.flatten().sort().values, w.flatten().sort().values)
    assert not torch.equal(randomize_matrix(w, 8), a)
    stack = torch.stack([torch.full((4, 5), float(i)) for i in range(3)])
    stack[:, 0, 0] = -1.0
    shuffled = randomize_matrix(stack, 0)
    for i in range(3):  # entries stay within their own slice
        assert torch.equal(shuffled[i].flatten().sort().values, stack[i].flatten().sort().values)
    with pytest.raises(ShapeError, match="got shape \\(5,\\)"):
        randomize_matrix(torch.randn(5), 0)
    with pytest.raises(ConfigError, match="got float"):
        randomize_matrix(w, 0.5)


def test_randomized_spectrum_is_marchenko_pastur_like():
    # a strong rank-one spike disappears after shuffling (correlation trap test)
    g = torch.Generator().manual_seed(3)
    n, m = 800, 200
    w = torch.randn(n, m, generator=g) / n ** 0.5
    w += 10.0 * torch.outer(torch.randn(n, generator=g), torch.randn(m, generator=g)) / n
    row = tensor_matrices("w", w)
    rand = tensor_matrices("w", randomize_matrix(w, 0))
    lam, lam_rand = eigenvalues([row])["w"], eigenvalues([rand])["w"]
    mp_edge = w.var().item() * (1 + (m / n) ** 0.5) ** 2 * n
    assert lam[-1] > 2 * mp_edge
    assert lam_rand[-1] < 1.2 * mp_edge


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.conv3 = nn.Conv2d(32, 12, 3)  # out < in: slices are transposed
        self.emb = nn.Embedding(40, 16)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)
        self.tiny = nn.Linear(10, 4)  # 4 eigenvalues < weightwatcher's min_evals 8
        self.norm = nn.BatchNorm1d(10)

    def forward(self, x):
        return self.fc2(self.fc1(self.conv2(self.conv1(x)).flatten(1)))


def test_matches_weightwatcher_on_cnn_mlp():
    ww = pytest.importorskip("weightwatcher")
    import logging
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = SmallNet()
    before = state_fingerprint(model)
    rows = module_matrices(model)
    ours = eigenvalues(rows)
    kept = {r.name: r for r in rows if r.skip_reason is None}
    assert set(ours) == set(kept) == {"conv1", "conv2", "conv3", "emb", "fc1", "fc2"}
    details = ww.WeightWatcher(model=model).analyze(conv2d_norm=False)
    assert set(details["longname"]) == set(kept)
    for _, d in details.iterrows():
        r = kept[d["longname"]]
        assert (r.N, r.M, r.num_evals) == (d["N"], d["M"], d["num_evals"])
        assert abs(ours[r.name][-1] - d["lambda_max"]) <= 1e-5 * d["lambda_max"]
    # weightwatcher's default conv2d_norm multiplies Conv2d slices by sqrt(1/2): λ_max / 2
    default = ww.WeightWatcher(model=model).analyze(layers=[1])
    assert abs(default["lambda_max"].iloc[0] - ours["conv1"][-1] / 2) <= 1e-5 * ours["conv1"][-1]
    assert state_fingerprint(model) == before
