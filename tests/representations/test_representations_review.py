"""Regression tests from the issue-6 review: captured activations overwritten by a later
in-place op, NaN activations in CKA / GDV, bad devices, and gdv-depth failing silently."""
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, DataError
from deepscope.experiments.gdv_depth import gdv_depth_study
from deepscope.representations.activations import capture_activations
from deepscope.representations.cka import cka, linear_cka
from deepscope.representations.gdv import gdv, gdv_of


def _net(inplace: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=inplace), nn.Linear(8, 3))


def _xy(n=30):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 5, generator=g), torch.arange(n) % 3


def test_capture_survives_inplace_relu():
    """The stored output of a Linear followed by nn.ReLU(inplace=True) used to be the
    post-ReLU values (negative entries zeroed)."""
    net = _net(True)
    x, y = _xy()
    fp = state_fingerprint(net)
    acts = capture_activations(net, x, layers=["0"])
    with torch.no_grad():
        pre = x @ net[0].weight.T + net[0].bias
    assert bool((pre < 0).any())
    torch.testing.assert_close(acts["0"], pre, rtol=0, atol=1e-6)
    assert state_fingerprint(net) == fp
    # and the GDV / CKA of that layer are those of the pre-activation
    g = gdv(net, (x, y), layers=["0"], include_input=False, progress=False)
    assert g.table["gdv"].iloc[0] == pytest.approx(gdv_of(pre, y).gdv, rel=1e-10)
    ref = gdv(_net(False), (x, y), layers=["0"], include_input=False, progress=False)
    assert g.table["gdv"].iloc[0] == pytest.approx(ref.table["gdv"].iloc[0], rel=1e-12)


def test_cka_nan_activations_are_noted_not_silent():
    net = _net(False)
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    x, _ = _xy()
    res = cka(net, x, layers_a=["0", "2"], progress=False)
    assert res.table["cka"].isna().all()
    assert (res.table["note"].str.contains("NaN or infinite")).all()
    with pytest.raises(DataError):
        linear_cka(x, x * float("nan"))


def test_gdv_nan_names_the_layer_and_bad_device():
    net = _net(False)
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    x, y = _xy()
    with pytest.raises(DataError, match="layer '2'"):
        gdv(net, (x, y), layers=["0", "2"], progress=False)
    with pytest.raises(ConfigError, match="device"):
        capture_activations(_net(False), x, device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            gdv(_net(False), (x, y), device="cuda", progress=False)


def test_gdv_depth_does_not_fail_silently(tmp_path):
    """An invalid max_per_class, or data too small for any GDV, used to give an empty result
    (exit code 0 on the CLI) with every probe failing in the catalog."""
    with pytest.raises(ConfigError, match="max_per_class"):
        gdv_depth_study(tmp_path / "z0", depths=[1], max_per_class=1, progress=False)
    assert not (tmp_path / "z0").exists() or not any((tmp_path / "z0").iterdir())
    with pytest.raises(DataError, match="no GDV could be measured.*2 points per class"):
        gdv_depth_study(tmp_path / "z1", depths=[1], n_train=3, epochs=1, width=4,
                        progress=False)


def test_integer_inputs_get_one_clear_error_and_token_models_pass():
    """uint8 images into a float model: a ShapeError naming the dtype (gdv, cka, measures);
    integer token ids into an Embedding model still run."""
    import pytest as _pytest
    import torch as _torch
    from torch import nn as _nn

    import deepscope
    from deepscope.errors import ShapeError
    _torch.manual_seed(0)
    m = _nn.Sequential(_nn.Linear(4, 8), _nn.ReLU(), _nn.Linear(8, 3))
    x = _torch.randint(0, 255, (30, 4), dtype=_torch.uint8)
    y = _torch.randint(0, 3, (30,))
    for call in (lambda: deepscope.gdv(m, (x, y), progress=False),
                 lambda: deepscope.cka(m, x, progress=False),
                 lambda: deepscope.measures(m, (x, y), progress=False)):
        with _pytest.raises(ShapeError, match="uint8"):
            call()
    emb = _nn.Sequential(_nn.Embedding(10, 4), _nn.Flatten(), _nn.Linear(12, 3))
    tokens = _torch.randint(0, 10, (30, 3))
    res = deepscope.gdv(emb, (tokens, y), progress=False)
    assert len(res.table) > 0
