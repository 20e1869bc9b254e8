"""Regression tests for bugs found in review of the landscape package (each failed before
its fix)."""
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, DataError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bn_mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(6, 2)).to(dtype)


def test_bn_recompute_trailing_single_sample_and_exact_mean():
    """33 samples in batches of 16 left a last batch of 1: BatchNorm1d raised ValueError.
    The re-estimated running mean is the exact mean over all samples, whatever batch_size
    (before: the unweighted mean of the batch means)."""
    from deepscope.landscape.evaluate import PointEvaluator
    m = _bn_mlp().train()
    fp = state_fingerprint(m)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(33, 3, generator=g) * 2 + 1
    y = torch.randint(0, 2, (33,), generator=g)
    with torch.no_grad():
        h = m[0](x)  # the BatchNorm's inputs
    means = []
    for bs in (16, 10, 33):
        ev = PointEvaluator(m, (x, y), batch_size=bs)
        ev.load(ev.vector(m))
        means.append(ev.copy[1].running_mean.clone())
        torch.testing.assert_close(means[-1], h.mean(0), atol=1e-5, rtol=1e-5)
        assert ev.evaluate(ev.vector(m))["train_loss"] > 0
    assert state_fingerprint(m) == fp
    with pytest.raises(DataError, match="at least 2"):
        PointEvaluator(m, (x[:1], y[:1])).evaluate(torch.cat(
            [p.detach().reshape(-1) for p in m.parameters()]))


def test_bend_training_with_a_trailing_single_sample_batch():
    """Bezier bend / bead training in mini-batches of 50 over 101 samples: the last batch
    of 1 sample crashed BatchNorm in training mode (raw ValueError)."""
    from deepscope.landscape.connect import connect
    g = torch.Generator().manual_seed(0)
    x = torch.randn(101, 3, generator=g)
    y = torch.randint(0, 2, (101,), generator=g)
    a, b = _bn_mlp(1), _bn_mlp(2)
    r = connect(a, b, (x, y), "bezier", threshold=100.0, points=5,
                bead_train={"batch_size": 50, "max_steps": 6}, progress=False)
    assert r.summary["bend_steps"] == 6 and r.connected == "yes"


def test_connect_refuses_bn_keep_on_batchnorm_models():
    """bn='keep' evaluated b (and every bead) with a's running statistics: level_b was not
    b's own loss. Now refused for BatchNorm models (fine without BatchNorm)."""
    from deepscope.landscape.connect import connect
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = torch.randint(0, 2, (40,), generator=g)
    a, b = _bn_mlp(1), _bn_mlp(2)
    with pytest.raises(ConfigError, match="bn='keep'"):
        connect(a, b, (x, y), "linear", threshold=100.0, bn="keep", progress=False)
    torch.manual_seed(0)
    pa, pb = nn.Linear(3, 2), nn.Linear(3, 2)
    r = connect(pa, pb, (x, y), "linear", threshold=100.0, bn="keep", grid=3, progress=False)
    assert r.connected == "yes"


def test_worker_beads_keep_the_float64_dtype():
    """With engine 'process' / 'ray' the worker rebuilt the model in float32: beads of a
    float64 model were trained and evaluated in float32 (levels differed at ~1e-7)."""
    from deepscope.landscape.dss import _evaluator_from, bead_task, train_bead
    from deepscope.landscape.evaluate import PointEvaluator
    from deepscope.nets import build_model
    spec = {"arch": "mlp", "input_shape": [2], "num_outputs": 1, "widths": [5]}
    model = build_model(spec, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :1])
    ev = PointEvaluator(model, (x, y))
    theta0 = ev.vector(model)
    opts = {"optimizer": "adam", "lr": 1e-2, "momentum": 0.0, "max_steps": 5,
            "batch_size": None, "check_every": 10}
    local, rec = train_bead(ev, theta0, level="train_loss", target=0.0, options=opts, seed=3)
    # the payload connect()'s runner sends to process / Ray workers
    from deepscope.landscape.connect import _bead_runner
    captured = {}

    def fake_execute(fn, payloads, **kw):
        captured["payloads"] = payloads
        return [fn(p) for p in payloads]

    import deepscope.sweep.engines as engines
    real = engines.execute
    engines.execute = fake_execute
    try:
        run = _bead_runner(ev, model.deepscope_spec, "train_loss", 0.0, opts, "process", 1,
                           None)
        out = run([{"id": "x", "theta": theta0, "seed": 3}])
    finally:
        engines.execute = real
    assert _evaluator_from(captured["payloads"][0]).dtype == torch.float64
    assert out[0]["status"] == "done", out[0]["error"]
    assert out[0]["theta"].dtype == torch.float64
    torch.testing.assert_close(out[0]["theta"], local, rtol=0, atol=1e-12)
    assert out[0]["level_final"] == pytest.approx(rec["level_final"], rel=1e-12)
    assert bead_task  # the worker entry point used above through the runner


def test_surface_refuses_an_unusable_device(tmp_path):
    """--device foo / cuda on a CPU-only machine ended in 'internal error' (exit 1)."""
    from deepscope.cli import main
    from deepscope.landscape.surface import surface
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(ConfigError, match="device 'foo'"):
        surface(m, (x, y), dims=1, steps=3, device="foo", progress=False)
    from deepscope.workflows import train_and_save
    path = tmp_path / "m.safetensors"
    train_and_save({"arch": "mlp", "widths": [4]}, {"name": "digits", "n_train": 60},
                   {"epochs": 1, "batch_size": 32, "seed": 0}, path, progress=False)
    assert main(["surface", str(path), "--dims", "1", "--steps", "3", "--device", "foo",
                 "--quiet"]) == 2
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda'"):
            surface(m, (x, y), dims=1, steps=3, device="cuda", progress=False)


def test_connect_refuses_models_of_different_module_types():
    """A ReLU MLP and a Tanh MLP have the same parameter shapes: connect() evaluated b (and
    the whole path) in a's architecture, so level_b was not b's loss. Now a ModelError."""
    from deepscope.errors import ModelError
    from deepscope.landscape.connect import connect
    from deepscope.nets import build_model
    a = build_model({"arch": "mlp", "input_shape": [3], "num_outputs": 2, "widths": [5]},
                    seed=0)
    b = build_model({"arch": "mlp", "input_shape": [3], "num_outputs": 2, "widths": [5],
                     "activation": "tanh"}, seed=1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    with pytest.raises(ModelError, match="different architectures"):
        connect(a, b, (x, y), "linear", 100.0, grid=3, progress=False)


@pytest.mark.parametrize("kw", [{"max_samples": -1}, {"max_samples": 0},
                                {"max_samples": 2.5}, {"bn_samples": -3}])
def test_bad_sample_counts_are_config_errors(kw):
    """max_samples=-1 evaluated n-1 samples silently (randperm(n)[:-1]); 0 gave NaN losses;
    2.5 a raw TypeError."""
    from deepscope.landscape.interpolate import interpolate
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    with pytest.raises(ConfigError, match=next(iter(kw))):
        interpolate(a, b, (x, y), steps=2, progress=False, **kw)
