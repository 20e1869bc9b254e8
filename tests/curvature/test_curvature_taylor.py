"""deepscope.curvature.taylor: zᵀHz by second-order forward propagation, against z @ (H z)
from Hessian-vector products (themselves tested against dense Hessians) and finite
differences; the fallbacks; the trace through it."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curv_reference import dense_hessian, small_mlp
from deepscope._params import state_fingerprint
from deepscope.curvature import hessian
from deepscope.curvature import taylor as T
from deepscope.curvature.operators import CurvatureOperator, stable_cross_entropy
from deepscope.curvature.taylor import QuadraticForms, TaylorQuadraticForm, TaylorUnsupported

D = torch.float64


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        out += x  # in place on a value of the forward pass
        return self.relu(out)


class Functional(nn.Module):
    """matmul + bias, GELU, LayerNorm, x * sigmoid(x), a view, a scalar factor."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(6, 10) * 0.3)
        self.b = nn.Parameter(torch.randn(10) * 0.1)
        self.ln = nn.LayerNorm(10)
        self.out = nn.Linear(10, 3)

    def forward(self, x):
        h = self.ln(F.gelu(x @ self.w1 + self.b))
        h = h * torch.sigmoid(h)
        return self.out(h.view(h.size(0), -1)) * 2.0


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.o = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        t = x.view(x.shape[0], 2, 3).repeat(1, 1, 2)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / 2.0, -1)
        return self.o((a @ t).mean(1))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        h, _ = self.lstm(x.view(x.shape[0], 2, 3))
        return self.out(h[:, -1])


def _image(c=1):
    return nn.Unflatten(1, (c, 6, 6))


MODELS = {
    "tanh-mlp": lambda: small_mlp(),
    "relu-inplace-dropout": lambda: nn.Sequential(nn.Linear(6, 12), nn.ReLU(inplace=True),
                                                  nn.Dropout(0.5), nn.Linear(12, 3)),
    "cnn-bn-maxpool": lambda: nn.Sequential(_image(), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
                                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                            nn.Linear(16, 3)),
    "resblock": lambda: nn.Sequential(_image(), nn.Conv2d(1, 3, 3, padding=1), ResBlock(3),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)),
    "groupnorm-instancenorm": lambda: nn.Sequential(
        _image(), nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.SiLU(),
        nn.InstanceNorm2d(4, affine=True), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)),
    "functional-layernorm": Functional,
    "attention": Attention,
    "lstm": Recurrent,
}


def _data(model_name, n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    d = 36 if model_name in ("cnn-bn-maxpool", "resblock", "groupnorm-instancenorm") else 6
    return torch.randn(n, d, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model(name):
    torch.manual_seed(0)
    m = MODELS[name]().eval()
    for mod in m.modules():  # BatchNorm with non-trivial statistics and affine parameters
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.normal_(1, 0.2)
            mod.bias.data.normal_(0, 0.2)
    return m


@pytest.mark.parametrize("name", list(MODELS))
def test_quadratic_forms_equal_the_products(name):
    model = _model(name)
    x, y = _data(name)
    fp = state_fingerprint(model)
    op = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=D)
    form = TaylorQuadraticForm(op)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        z = torch.randn(op.dim, generator=g, dtype=D)
        assert float(form(z)) == pytest.approx(float(z @ op.matvec(z)), rel=1e-10, abs=1e-12)
    assert state_fingerprint(model) == fp
    assert form.num_forms == 3 and op.num_matvecs == 6


def test_against_a_dense_hessian_and_in_float32():
    model = small_mlp()
    x, y = _data("tanh-mlp", n=64)
    H = dense_hessian(model, x, y)
    op = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=D)
    z = torch.randn(op.dim, dtype=D, generator=torch.Generator().manual_seed(3))
    assert float(TaylorQuadraticForm(op)(z)) == pytest.approx(float(z @ H @ z), rel=1e-12)
    op32 = CurvatureOperator(model, x, y, stable_cross_entropy)
    assert float(TaylorQuadraticForm(op32)(z.float())) == pytest.approx(float(z @ H @ z),
                                                                        rel=1e-4)


def test_several_batches_and_a_block():
    """Batches weighted by size (tapes recorded again per form when not kept); a block
    operator holds the other parameters fixed."""
    model = _model("cnn-bn-maxpool")
    x, y = _data("cnn-bn-maxpool", n=50)
    op = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=D, batch_size=16)
    form = TaylorQuadraticForm(op)
    assert not form.keep and len(op.batches) == 4
    z = torch.randn(op.dim, dtype=D, generator=torch.Generator().manual_seed(4))
    assert float(form(z)) == pytest.approx(float(z @ op.matvec(z)), rel=1e-10)
    block = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=D,
                              block=["1.weight", "6.weight"])
    zb = torch.randn(block.dim, dtype=D, generator=torch.Generator().manual_seed(5))
    assert float(TaylorQuadraticForm(block)(zb)) == pytest.approx(
        float(zb @ block.matvec(zb)), rel=1e-10)


def test_rewrites_match_torch_values_and_finite_differences():
    """The compositions that replace torch operations with wrong second-order forward
    formulas: same values as torch, second derivatives as finite differences (float64)."""
    g = torch.Generator().manual_seed(0)
    x2, x4 = torch.randn(6, 8, generator=g, dtype=D), torch.randn(3, 4, 5, 5, generator=g, dtype=D)
    w8, b8 = torch.rand(8, generator=g, dtype=D) + 0.5, torch.randn(8, generator=g, dtype=D)
    w4, b4 = torch.rand(4, generator=g, dtype=D) + 0.5, torch.randn(4, generator=g, dtype=D)
    target = torch.rand(6, 8, generator=g, dtype=D)
    cases = [
        (lambda x: T._layer_norm(x, (8,), w8, b8), lambda x: F.layer_norm(x, (8,), w8, b8), x2),
        (lambda x: T._group_norm(x, 2, w4, b4), lambda x: F.group_norm(x, 2, w4, b4), x4),
        (lambda x: T._instance_norm(x, weight=w4, bias=b4),
         lambda x: F.instance_norm(x, weight=w4, bias=b4), x4),
        (lambda x: T._batch_norm(x, None, None, w4, b4, True),
         lambda x: F.batch_norm(x, None, None, w4, b4, True), x4),
        (lambda x: T._bce_with_logits(x, target),
         lambda x: F.binary_cross_entropy_with_logits(x, target), x2),
    ]
    if hasattr(F, "rms_norm"):
        cases.append((lambda x: T._rms_norm(x, (8,), w8, 1e-6),
                      lambda x: F.rms_norm(x, (8,), w8, 1e-6), x2))
    h = 1e-4
    for ours, theirs, x in cases:
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)
        t = torch.randn(x.shape, generator=g, dtype=D)
        nested = torch.func.jvp(lambda a: torch.func.jvp(ours, (a,), (t,))[1], (x,), (t,))[1]
        fd = (theirs(x + h * t) - 2 * theirs(x) + theirs(x - h * t)) / h ** 2
        assert float((nested - fd).abs().max()) <= 1e-5 * (1 + float(fd.abs().max()))
    # the reason for the rewrites: torch's own nested jvp of layer_norm is off
    t = torch.randn(x2.shape, generator=g, dtype=D)
    f = lambda x: F.layer_norm(x, (8,))  # noqa: E731
    nested = torch.func.jvp(lambda a: torch.func.jvp(f, (a,), (t,))[1], (x2,), (t,))[1]
    fd = (f(x2 + h * t) - 2 * f(x2) + f(x2 - h * t)) / h ** 2
    assert float((nested - fd).abs().max()) > 0.1


class SetItem(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x)).clone()
        h[:, 0] = 0.0  # item assignment into a value of the forward pass
        return self.out(h)


class ViewInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc(x)
        v = h.view(-1)
        v.mul_(2.0)  # updates h through a view
        return self.out(torch.tanh(h))


@pytest.mark.parametrize("cls,why", [(SetItem, "item assignment"), (ViewInPlace, "view")])
def test_unsupported_models_fall_back_to_products(cls, why):
    torch.manual_seed(0)
    model = cls().eval()
    x, y = _data("tanh-mlp")
    op = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=D)
    z = torch.randn(op.dim, dtype=D, generator=torch.Generator().manual_seed(6))
    with pytest.raises(TaylorUnsupported, match=why):
        TaylorQuadraticForm(op)(z)
    forms = QuadraticForms(op)
    q = forms.rows(torch.stack([z, 2 * z]))
    assert forms.info["quadratic_forms"] == "hvp" and why in forms.info["taylor_fallback"]
    ref = float(z @ op.matvec(z))
    np.testing.assert_allclose(q.numpy(), [ref, 4 * ref], rtol=1e-12)


def test_a_wrong_taylor_value_is_caught_by_the_check(monkeypatch):
    """Without the layer_norm rewrite the Taylor value is wrong; the first-probe check sees
    it and every form comes from products."""
    monkeypatch.delitem(T._REWRITES, F.layer_norm)
    model = _model("functional-layernorm")
    x, y = _data("functional-layernorm")
    op = CurvatureOperator(model, x, y, stable_cross_entropy, dtype=D)
    g = torch.Generator().manual_seed(7)
    Z = torch.randn(3, op.dim, generator=g, dtype=D)
    forms = QuadraticForms(op)
    q = forms.rows(Z)
    assert forms.info["quadratic_forms"] == "hvp"
    assert forms.info["taylor_fallback"].startswith("check failed")
    np.testing.assert_allclose(q.numpy(), [float(z @ op.matvec(z)) for z in Z], rtol=1e-12)


def test_unsupported_operation_in_the_loss_falls_back():
    """huber_loss has no second-order forward formula in torch: products."""
    model = small_mlp()
    x, _ = _data("tanh-mlp")
    yr = torch.randn(40, 3, generator=torch.Generator().manual_seed(8))
    op = CurvatureOperator(model, x, yr, lambda o, t: F.huber_loss(o, t), dtype=D)
    forms = QuadraticForms(op)
    z = torch.randn(op.dim, dtype=D, generator=torch.Generator().manual_seed(9))
    q = forms.rows(z[None])
    assert forms.info["quadratic_forms"] == "hvp"
    assert float(q[0]) == pytest.approx(float(z @ op.matvec(z)), rel=1e-12)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_hessian_trace_with_taylor_forms_equals_the_products(method):
    """Same probes: the same estimate to rounding; the summary says which forms ran."""
    model = _model("resblock")
    x, y = _data("resblock", n=48)
    kw = dict(which="trace", probes=12, trace_method=method, dtype=D, progress=False)
    auto = hessian(model, (x, y), **kw)
    hvp = hessian(model, (x, y), quadratic_forms="hvp", **kw)
    assert auto.summary["trace_quadratic_forms"] == "taylor"
    assert auto.summary["trace_taylor_fallback"] is None
    assert hvp.summary["trace_quadratic_forms"] == "hvp"
    assert auto.summary["trace"] == pytest.approx(hvp.summary["trace"], rel=1e-10)
    assert auto.summary["trace_stderr"] == pytest.approx(hvp.summary["trace_stderr"],
                                                         rel=1e-8)
    # one check product on top of the budget
    assert auto.summary["num_hvps"] == hvp.summary["num_hvps"] + 1
    per = hessian(model, (x, y), per_layer=True, **kw)
    per_hvp = hessian(model, (x, y), per_layer=True, quadratic_forms="hvp", **kw)
    np.testing.assert_allclose(per.table["value"], per_hvp.table["value"], rtol=1e-9)
    with pytest.raises(Exception, match="quadratic_forms"):
        hessian(model, (x, y), quadratic_forms="exact", **kw)


@pytest.mark.parametrize("name", ["resblock", "groupnorm-instancenorm", "lstm"])
def test_float32_forms_pass_their_check(name):
    """In float32 the check's tolerance (1e-5 ‖z‖‖Hz‖) leaves room for rounding only. The
    float32 LSTM on CPUs runs oneDNN's RNN kernel, which has no forward-mode derivative:
    products, the same estimate."""
    model = _model(name)
    x, y = _data(name, n=64)
    kw = dict(which="trace", probes=6, trace_method="hutchinson", progress=False)
    res = hessian(model, (x, y), **kw)
    if name == "lstm" and res.summary["trace_quadratic_forms"] == "hvp":
        assert "forward AD" in res.summary["trace_taylor_fallback"]
        ref = hessian(model, (x, y), quadratic_forms="hvp", **kw)
        assert res.summary["trace"] == pytest.approx(ref.summary["trace"], rel=1e-6)
        return
    assert res.summary["trace_quadratic_forms"] == "taylor", res.summary
