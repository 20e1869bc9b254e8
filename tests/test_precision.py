"""deepscope._precision: measurements run at IEEE float32 whatever the process-wide TF32 /
bfloat16 settings, and leave those settings as they found them."""
import pytest
import torch
from torch import nn

import deepscope
from deepscope._precision import _legacy, ieee_float32, precision_flags


def _fast(flags: dict) -> list[str]:
    return [k for k, v in flags.items() if v in ("tf32", "bf16")]


@pytest.fixture
def user_flags():
    """A training script's settings: TF32 / bfloat16 allowed everywhere (legacy switches and
    a per-operator flag); PyTorch's defaults restored after."""
    assert _legacy() is not None
    defaults = precision_flags()
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.mkldnn.conv.fp32_precision = "bf16"
    yield precision_flags()
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.fp32_precision = "none"
    for slot in (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul,
                 torch.backends.mkldnn.conv, torch.backends.mkldnn.rnn):
        slot.fp32_precision = "none"
    assert precision_flags() == defaults and _legacy() == ("highest", True)


def _check_inside():
    flags = precision_flags()
    assert not _fast(flags), flags
    assert torch.get_float32_matmul_precision() == "highest"
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
    return flags


def test_flags_inside_and_restored(user_flags):
    assert set(_fast(user_flags)) >= {"cuda.matmul", "cudnn.conv", "mkldnn.matmul",
                                      "mkldnn.conv"}
    with ieee_float32():
        inside = _check_inside()
    assert set(inside) == set(user_flags) and len(inside) >= 4
    assert precision_flags() == user_flags
    assert _legacy() == ("medium", True)


def test_restored_after_an_exception(user_flags):
    @ieee_float32
    def fails():
        _check_inside()
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert precision_flags() == user_flags


def test_generic_and_mixed_settings(user_flags):
    """The generic per-operator switch, and a state PyTorch itself calls mixed (legacy
    switches unreadable): IEEE inside, the same flags after."""
    torch.backends.fp32_precision = "tf32"
    before = precision_flags()
    with ieee_float32():
        _check_inside()
    assert precision_flags() == before and torch.backends.fp32_precision == "tf32"
    torch.backends.fp32_precision = "none"  # the flags that followed it follow it back
    assert precision_flags()["mkldnn.rnn"] == "none"
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # rnn stays tf32: mixed
    assert _legacy() is None
    before = precision_flags()
    with ieee_float32():
        _check_inside()
    assert precision_flags() == before


def test_nested_and_decorated_keep_metadata():
    @ieee_float32
    def f(a, *, b=2):
        """doc"""
        with ieee_float32():
            pass
        return precision_flags()["mkldnn.matmul"], a + b

    assert f(1) == ("ieee", 3)
    assert f.__doc__ == "doc" and f.__name__ == "f"


SEEN: list[dict] = []  # shared by copies (surface, interpolate... evaluate private copies)


class Recorder(nn.Module):
    """An MLP whose forward records the precision flags it runs under (in SEEN)."""

    def __init__(self, d_in=4, width=8, classes=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.act = nn.ReLU()
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        SEEN.append(precision_flags())
        return self.out(self.act(self.fc1(x)))


def _data(n=48, d_in=4, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def _calls():
    x, y = _data()
    return {
        "hessian": lambda m, m2: deepscope.hessian(m, (x, y), k=1, which="top",
                                                   progress=False),
        "surface": lambda m, m2: deepscope.surface(m, (x, y), dims=1, steps=3,
                                                   progress=False),
        "interpolate": lambda m, m2: deepscope.interpolate(m, m2, (x, y), steps=3,
                                                           bn="keep"),
        "margins": lambda m, m2: deepscope.margins(m, (x, y), layers=["fc1", "out"],
                                                   progress=False),
        "measures": lambda m, m2: deepscope.measures(m, (x, y), which=["output_margin"],
                                                     progress=False),
        "ntk": lambda m, m2: deepscope.ntk(m, x[:6], progress=False),
        "gdv": lambda m, m2: deepscope.gdv(m, (x, y), layers=["fc1"], progress=False),
        "cka": lambda m, m2: deepscope.cka(m, x, m2, layers_a=["fc1"], layers_b=["fc1"],
                                           progress=False),
        "activation_patterns": lambda m, m2: __import__(
            "deepscope.dynamics.monitor", fromlist=["activation_patterns"]
        ).activation_patterns(m, x),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_measurements_run_at_ieee_precision(name, user_flags):
    torch.manual_seed(0)
    a, b = Recorder(), Recorder()
    SEEN.clear()
    _calls()[name](a, b)
    seen = list(SEEN)
    assert seen, f"{name} never ran the model"
    assert not any(_fast(flags) for flags in seen), (name, seen[0])
    assert precision_flags() == user_flags


@pytest.mark.parametrize("name", ["spectra", "align", "connect", "realization"])
def test_other_measurements_are_wrapped(name):
    # no cheap call of these runs a Recorder's forward; the wrapper is what guards them
    from deepscope.realization.probe import realization
    target = realization if name == "realization" else getattr(deepscope, name)
    assert getattr(target, "__wrapped__", None) is not None, name


def test_user_precision_does_not_change_a_forward(user_flags):
    """Where "medium" changes this CPU's float32 products (oneDNN with bfloat16 support: a
    512-wide MLP's logits move in the last bits), a guarded computation gives bit for bit
    the "highest" result."""
    x, _ = _data(512, 128, 4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 4))

    def forward():
        with torch.no_grad():
            return model(x)

    unguarded = forward()
    got = ieee_float32(forward)()
    torch.set_float32_matmul_precision("highest")  # PyTorch's defaults: IEEE float32
    torch.backends.mkldnn.conv.fp32_precision = "none"
    ref = forward()
    assert torch.equal(got, ref)
    if torch.equal(unguarded, ref):
        pytest.skip("this CPU computes float32 products the same at 'medium'")


def test_pytorch_defaults_round_trip():
    before, legacy = precision_flags(), _legacy()
    with ieee_float32():
        _check_inside()
        with ieee_float32():
            _check_inside()
        _check_inside()
    assert precision_flags() == before and _legacy() == legacy
