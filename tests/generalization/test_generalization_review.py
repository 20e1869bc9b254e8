"""Regression tests from the issue-6 review: in-place activations after a captured margin
layer, non-finite weights, input dtype / label range in measures(), bad devices, and the
CLI exit code when every requested measure is omitted."""
import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.cli import main
from deepscope.errors import ConfigError, ModelError, ShapeError
from deepscope.generalization.margins import EPS, margins
from deepscope.generalization.measures import measures


def _net(inplace: bool, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=inplace), nn.Linear(8, 8),
                         nn.ReLU(inplace=inplace), nn.Linear(8, 3)).to(dtype)


def _xy(n=40, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def test_margins_inplace_relu_after_captured_layer():
    """nn.ReLU(inplace=True) right after a captured Linear used to overwrite h_l: ν and the
    gradient were those of the post-activation (ν off by ~2x, margins by up to 30x)."""
    x, y = _xy()
    layers = ["input", "0", "2"]
    ref = margins(_net(False), (x, y), layers=layers, progress=False)
    net = _net(True)
    fp = state_fingerprint(net)
    got = margins(net, (x, y), layers=layers, progress=False)
    assert state_fingerprint(net) == fp
    # ν against the pre-activation outputs computed by hand
    with torch.no_grad():
        h0 = x @ net[0].weight.T + net[0].bias
    nu0 = float(np.sqrt(np.trace(np.cov(h0.numpy(), rowvar=False))))
    assert got.nu["0"] == pytest.approx(nu0, rel=1e-12)
    for l in layers:
        assert got.nu[l] == pytest.approx(ref.nu[l], rel=1e-12)
        np.testing.assert_allclose(got.margins[l], ref.margins[l], rtol=1e-10, atol=0)
    # and the margin at layer "0" against an explicit gradient for one correct point
    i = int(got.indices[0])
    h = h0[i:i + 1].clone().requires_grad_(True)
    f = net[4](torch.relu(net[2](torch.relu(h))))[0]
    yi = int(y[i])
    other = f.detach().clone()
    other[yi] = -float("inf")
    j = int(other.argmax())
    (g,) = torch.autograd.grad(f[yi] - f[j], h)
    d = float((f[yi] - f[j]).detach()) / np.sqrt(float(g.pow(2).sum()) + EPS) / nu0
    assert got.margins["0"][0] == pytest.approx(d, rel=1e-10)


def test_margins_rejects_nan_weights_and_bad_device():
    net = _net(False)
    x, y = _xy()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match="non-finite"):
        margins(net, (x, y), progress=False)
    with pytest.raises(ConfigError, match="device"):
        margins(_net(False), (x, y), device="nonsense", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            margins(_net(False), (x, y), device="cuda", progress=False)


def test_measures_casts_inputs_to_the_model_dtype():
    """A float64 model with a float32 dataset used to crash with a dtype RuntimeError."""
    net = _net(False, torch.float64)
    x, y = _xy(dtype=torch.float32)
    which = "output_margin,path_norm,log_prod_of_spec,pacbayes_sigma"
    got = measures(net, (x, y), which=which, progress=False)
    ref = measures(net, (x.double(), y), which=which, progress=False)
    for k in ref.summary:
        assert got.summary[k] == pytest.approx(ref.summary[k], rel=1e-12)


def test_measures_label_range_and_nan_weights():
    net = _net(False)
    x, y = _xy()
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        measures(net, (x, y + 5), which="output_margin", progress=False)
    # measures that need no labels still work with them
    assert "path_norm" in measures(net, (x, y + 5), which="path_norm", progress=False).summary
    with torch.no_grad():
        net[2].bias[0] = float("inf")
    with pytest.raises(ModelError, match="non-finite"):
        measures(net, (x, y), which="path_norm", progress=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from deepscope.workflows import train_and_save
    d = tmp_path_factory.mktemp("review")
    tr = {"optimizer": "sgd", "lr": 0.05, "epochs": 1, "batch_size": 32, "seed": 0}
    reg, cls = d / "reg.safetensors", d / "cls.safetensors"
    train_and_save({"arch": "mlp", "widths": [4]},
                   {"name": "teacher", "task": "regression", "input_dim": 2, "n_train": 32,
                    "n_test": 8}, tr, reg, progress=False)
    train_and_save({"arch": "mlp", "widths": [8]}, {"name": "digits", "n_train": 60,
                                                    "n_test": 20}, tr, cls, progress=False)
    return reg, cls


def _one_line_error(capsys, args):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("deepscope: error:"), err
    return err[0]


def test_measures_cli_exit_2_when_every_measure_is_omitted(ckpts, capsys):
    reg, _ = ckpts
    line = _one_line_error(capsys, ["measures", str(reg), "--which",
                                    "output_margin,pacbayes_sigma", "--quiet"])
    assert "classification" in line
    # a measure that applies still exits 0
    assert main(["measures", str(reg), "--which", "path_norm", "--quiet"]) == 0


def test_margins_cli_bad_device(ckpts, capsys):
    _, cls = ckpts
    assert "device" in _one_line_error(capsys, ["margins", str(cls), "--device", "nonsense",
                                                "--quiet"])


def test_pacbayes_checks_label_range():
    """Out-of-range labels used to count as misclassified in the noise search (silent)."""
    x, y = _xy()
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        measures(_net(False), (x, y + 3), which="pacbayes_sigma", progress=False)


def test_margins_reject_batchnorm_without_running_stats():
    """Such a BatchNorm normalizes by the batch even in eval mode, so the margins depended
    on batch_size (the one-backward-pass per-sample gradient is then wrong)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6, track_running_stats=False),
                        nn.ReLU(), nn.Linear(6, 3)).double()
    with pytest.raises(ModelError, match="track_running_stats=False"):
        margins(net, _xy(), progress=False)


def test_margins_single_logit_message():
    """A 1-output model used to get 'labels must lie in [0, 1)' although they did."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    x, _ = _xy()
    with pytest.raises(ShapeError, match="at least 2 logits"):
        margins(net, (x, torch.zeros(len(x), dtype=torch.long)), progress=False)
