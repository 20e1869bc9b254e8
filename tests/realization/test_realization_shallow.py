"""Extraction of f(x) = Σ a_k ReLU(w_k·x + b_k) + c from modules (against the module's forward)."""
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ModelError, ShapeError
from deepscope.nets import build_model
from deepscope.realization.shallow import ShallowReLU, extract_shallow


def _mlp(**kw):
    spec = {"arch": "mlp", "widths": [7], "input_shape": [3], "num_outputs": 2, **kw}
    return build_model(spec, seed=0)


def _brute(net: ShallowReLU, x):
    """Neuron by neuron, the formula as written."""
    out = net.c.clone().expand(x.shape[0], -1).clone()
    for k in range(net.num_neurons):
        pre = x @ net.W[k] + net.b[k]
        out += torch.clamp(pre, min=0)[:, None] * net.A[:, k][None, :]
    return out


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"dropout": 0.3}])
def test_mlp_extraction_matches_forward(kw):
    model = _mlp(**kw)
    before = state_fingerprint(model)
    net = extract_shallow(model)
    assert (net.num_neurons, net.input_dim, net.output_dim) == (7, 3, 2)
    x = torch.randn(50, 3, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        want = model(x.float()).double()
    assert torch.allclose(net(x), want, atol=1e-5)
    assert torch.allclose(net(x), _brute(net, x), atol=1e-12)
    model.train()
    assert state_fingerprint(model) == before


def test_batchnorm_is_folded_in_eval_mode():
    model = _mlp(batchnorm=True)
    with torch.no_grad():  # non-trivial running statistics
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
    before = state_fingerprint(model)
    net = extract_shallow(model)
    x = torch.randn(40, 3, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        want = model(x.float()).double()
    assert torch.allclose(net(x), want, atol=1e-5)
    model.train()
    assert state_fingerprint(model) == before  # train flag restored, stats untouched


def test_sequential_and_multi_output_float64():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    net = extract_shallow(model)
    x = torch.randn(30, 4, dtype=torch.float64)
    assert torch.allclose(net(x), model(x).detach(), atol=1e-12)
    assert net.A.shape == (3, 5)
    # round trip through to_module
    assert torch.allclose(net.to_module()(x).detach(), net(x), atol=1e-12)


def test_jacobian_is_the_closed_form():
    net = extract_shallow(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double())
    x = torch.randn(20, 3, dtype=torch.float64)
    _, jac = net.value_and_jacobian(x)
    act = (x @ net.W.T + net.b > 0).double()  # (N, n)
    want = torch.einsum("mk,nk,kd->nmd", net.A, act, net.W)
    assert torch.allclose(jac, want, atol=1e-12)


@pytest.mark.parametrize("model,needle", [
    (nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)),
     "Linear, ReLU, Linear, ReLU, Linear"),
    (nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)), "Tanh"),
    (nn.Linear(2, 1), "Linear"),
    (nn.Conv1d(1, 1, 3), "Conv1d"),
])
def test_other_models_raise_model_error(model, needle):
    with pytest.raises(ModelError, match="expected a shallow ReLU network") as exc:
        extract_shallow(model)
    assert needle in str(exc.value)


def test_deep_mlp_and_custom_forward_are_refused():
    with pytest.raises(ModelError):
        extract_shallow(build_model({"arch": "mlp", "widths": [4, 4], "input_shape": [2],
                                     "num_outputs": 1}, seed=0))

    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ModelError, match="custom forward"):
        extract_shallow(Doubled(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
    with pytest.raises(ModelError):
        extract_shallow("not a model")


def test_shape_errors():
    net = ShallowReLU.from_arrays(torch.ones(3, 2), torch.zeros(3), torch.ones(3))
    with pytest.raises(ShapeError):
        net(torch.zeros(4, 5))
    with pytest.raises(ShapeError):
        ShallowReLU.from_arrays(torch.ones(3, 2), torch.zeros(4), torch.ones(3))
