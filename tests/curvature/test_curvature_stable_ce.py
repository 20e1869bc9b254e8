"""stable_cross_entropy: the same function as F.cross_entropy, with derivatives that keep their
precision on confident predictions (the case of a well-trained classifier's Hessian)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope.curvature.operators import CurvatureOperator, resolve_loss, stable_cross_entropy


def logits(n=64, c=10, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, c, generator=g)).to(dtype), \
        torch.randint(0, c, (n,), generator=g)


def output_hvp(loss, z, y, u):
    z = z.detach().clone().requires_grad_(True)
    g = torch.autograd.grad(loss(z, y), z, create_graph=True)[0]
    return g.detach(), torch.autograd.grad(g, z, u)[0]


def confident(n=256, c=10, margin=16.0, seed=1, dtype=torch.float64):
    """Logits whose target beats every other class by >= margin (p_y > 1 - 1e-6)."""
    z, y = logits(n, c, 1.0, seed, dtype)
    return z + margin * F.one_hot(y, c).to(dtype), y


@pytest.mark.parametrize("scale", [0.1, 3.0, 40.0])
def test_same_value_gradient_and_hessian_as_torch(scale):
    z, y = logits(scale=scale)
    assert float(stable_cross_entropy(z, y)) == pytest.approx(float(F.cross_entropy(z, y)),
                                                               rel=1e-12, abs=1e-300)
    u = torch.randn_like(z)
    g1, h1 = output_hvp(stable_cross_entropy, z, y, u)
    g2, h2 = output_hvp(F.cross_entropy, z, y, u)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(h1, h2, rtol=1e-10, atol=1e-14)
    # the exact Hessian of one sample's loss: (diag(p) - p p^T) / n
    p = torch.softmax(z[0], 0)
    H = torch.autograd.functional.hessian(lambda t: stable_cross_entropy(t[None], y[:1]), z[0])
    torch.testing.assert_close(H, torch.diag(p) - torch.outer(p, p), rtol=1e-10, atol=1e-14)


def test_float32_precision_on_confident_predictions():
    z64, y = confident()
    u64 = torch.randn_like(z64)
    # exact reference in float64: p_j = exp(d_j) / (1 + s) computed from the margins
    g_ref, h_ref = output_hvp(stable_cross_entropy, z64, y, u64)
    g_t, h_t = output_hvp(F.cross_entropy, z64, y, u64)  # float64 torch: still fine here
    torch.testing.assert_close(h_t, h_ref, rtol=1e-6, atol=0)
    z32, u32 = z64.float(), u64.float()
    g_s, h_s = output_hvp(stable_cross_entropy, z32, y, u32)
    g_f, h_f = output_hvp(F.cross_entropy, z32, y, u32)

    def rel(a, b):
        return float((a.double() - b).norm() / b.norm())
    assert rel(g_s, g_ref) < 1e-5 and rel(h_s, h_ref) < 1e-5
    # what it fixes: torch's formula cancels p_y - 1 in float32
    assert rel(h_f, h_ref) > 1e-3


def test_falls_back_to_torch_where_it_does_not_apply():
    z, y = logits()
    y2 = y.clone()
    y2[:5] = -100  # ignore_index
    assert float(stable_cross_entropy(z, y2)) == float(F.cross_entropy(z, y2))
    probs = torch.softmax(torch.randn_like(z), 1)  # probability targets
    assert float(stable_cross_entropy(z, probs)) == float(F.cross_entropy(z, probs))
    seq = torch.randn(4, 10, 7, dtype=torch.float64)  # (N, C, L)
    lab = torch.randint(0, 10, (4, 7))
    assert float(stable_cross_entropy(seq, lab)) == float(F.cross_entropy(seq, lab))
    assert resolve_loss("cross_entropy", "classification")[0] is stable_cross_entropy
    assert resolve_loss(None, "classification") == (stable_cross_entropy, "cross_entropy")


@pytest.mark.parametrize("cache", [True, False])
def test_operator_float32_matches_float64_on_a_confident_model(cache):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    x = torch.randn(600, 6)
    with torch.no_grad():
        model[2].weight.mul_(60.0)  # sharp softmax; keep the confidently classified samples
        y = model(x).argmax(1)
        q = 1 - torch.softmax(model(x).double(), 1).max(1).values
    keep = (q > 1e-9) & (q < 1e-4)
    x, y = x[keep], y[keep]
    assert x.shape[0] > 100
    ref = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=torch.float64)
    op = CurvatureOperator(model, x, y, stable_cross_entropy, cache=cache)
    torch_op = CurvatureOperator(model, x, y, F.cross_entropy, cache=cache)
    v = torch.randn(ref.dim, dtype=torch.float64)
    h = ref.matvec(v)
    err = float((op.matvec(v.float()).double() - h).norm() / h.norm())
    err_torch = float((torch_op.matvec(v.float()).double() - h).norm() / h.norm())
    assert err < 1e-5
    assert err_torch > 10 * err
