"""deepscope.landscape.surface against a slow obvious loop (load theta + a d1 + b d2 into a
copy, evaluate), engine agreement, BatchNorm modes, resume, PCA planes, the model contract."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ModelError, ShapeError
from deepscope.landscape.directions import filter_normalized_directions
from deepscope.landscape.result_surface import COLUMNS, SurfaceResult
from deepscope.landscape.surface import surface
from deepscope.nets import build_model, complete_arch_spec


def data(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def make(arch: dict, seed=0):
    spec = complete_arch_spec({**arch, "input_shape": [1, 8, 8], "num_outputs": 10})
    return build_model(spec, seed=seed)


MLP = {"arch": "mlp", "widths": [16, 12]}
CNN = {"arch": "cnn", "channels": [4, 6], "fc": [12, 8]}
RESNET = {"arch": "resnet", "blocks": [1, 1], "width": 4, "batchnorm": True}


def slow_surface(model, x, y, dirs, a_vals, b_vals=None, *, bn="keep", loss="cross_entropy",
                 bn_batch=4096):
    """The obvious loop: copy the model, set theta + a d1 + b d2, evaluate the whole split."""
    out = {}
    b_vals = [None] if b_vals is None else b_vals
    for i, a in enumerate(a_vals):
        for j, b in enumerate(b_vals):
            m = copy.deepcopy(model)
            with torch.no_grad():
                for name, p in m.named_parameters():
                    new = p + a * dirs[0][name]
                    if b is not None:
                        new = new + b * dirs[1][name]
                    p.copy_(new)
                if bn == "recompute":
                    for mod in m.modules():
                        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                            mod.reset_running_stats()
                            mod.momentum = None
                    m.train()
                    for k in range(0, x.shape[0], bn_batch):
                        m(x[k:k + bn_batch])
                m.eval()
                o = m(x)
                if loss == "cross_entropy":
                    val = float(F.cross_entropy(o, y))
                    acc = float((o.argmax(1) == y).double().mean())
                else:
                    val = float(F.mse_loss(o, y))
                    acc = math.nan
            out[(i, j)] = (val, acc)
    return out


def check_against_slow(res, model, x, y, *, bn="keep", loss="cross_entropy", tol=1e-5):
    a, b = res.axes()
    ref = slow_surface(model, x, y, res.directions, a, b, bn=bn, loss=loss)
    for row in res.table.itertuples():
        val, acc = ref[(row.i, row.j)]
        assert row.loss == pytest.approx(val, rel=tol, abs=tol), (row.i, row.j)
        if not math.isnan(acc):
            assert row.accuracy == pytest.approx(acc, abs=1e-12)


@pytest.mark.parametrize("arch", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("engine", ["vmap", "loop"])
def test_plane_equals_slow_loop(arch, engine):
    model = make(arch)
    model.train()  # the probe evaluates in eval mode and must restore nothing it never touched
    fp = state_fingerprint(model)
    x, y = data()
    res = surface(model, (x, y), dims=2, steps=(3, 2), span=0.8, engine=engine,
                  points_per_batch=5, progress=False)
    assert state_fingerprint(model) == fp
    assert list(res.table.columns) == list(COLUMNS) and len(res.table) == 6
    assert res.summary["evaluation"] == engine
    check_against_slow(res, model, x, y)
    # directions are the seeded filter-normalized ones
    d1, d2 = filter_normalized_directions(model, 2, seed=0)
    for k in d1:
        assert torch.equal(res.directions[0][k], d1[k]) and torch.equal(res.directions[1][k], d2[k])


def test_engines_agree_and_center_is_model_loss():
    from deepscope.train.evaluate import evaluate
    model = make(CNN, seed=3)
    x, y = data(100, seed=1)
    runs = {e: surface(model, (x, y), dims=2, steps=(3, 5), span=1.0, engine=e,
                       points_per_batch=5, batch_size=64, progress=False)
            for e in ("vmap", "loop", "sequential")}
    for e in ("loop", "sequential"):
        np.testing.assert_allclose(runs[e].table["loss"], runs["vmap"].table["loss"],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(runs[e].table["accuracy"], runs["vmap"].table["accuracy"])
    ref = evaluate(model, (x, y))
    for r in runs.values():
        assert r.summary["center_loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert r.summary["center_accuracy"] == pytest.approx(ref["acc"], abs=1e-12)
        center = r.table[(r.table["a"] == 0) & (r.table["b"] == 0)]
        assert float(center["loss"].iloc[0]) == r.summary["center_loss"]
    # a grid that misses the origin still reports the center
    off = surface(model, (x, y), dims=1, steps=4, span=(0.5, 1.0), progress=False)
    assert off.summary["center_loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert float(off.table["a"].min()) == 0.5


@pytest.mark.parametrize("bn", ["keep", "recompute"])
def test_resnet_batchnorm_modes_equal_slow_loop(bn):
    model = make(RESNET, seed=2)
    x, y = data(48, seed=2)
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        model(x)
    model.eval()
    fp = state_fingerprint(model)
    res = surface(model, (x, y), dims=2, steps=3, span=0.5, bn=bn, progress=False)
    assert state_fingerprint(model) == fp
    assert res.summary["bn"] == bn and res.summary["has_batchnorm"]
    # 48 samples x a few hundred activations: small enough for vmap under "auto" on a CPU
    assert res.summary["evaluation"] == ("sequential" if bn == "recompute" else "vmap")
    check_against_slow(res, model, x, y, bn=bn)
    if bn == "keep":
        v = surface(model, (x, y), dims=2, steps=3, span=0.5, engine="vmap", progress=False)
        np.testing.assert_allclose(v.table["loss"], res.table["loss"], rtol=1e-5)


def test_line_mse_and_test_split_and_max_samples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
    xtr, ytr = torch.randn(300, 5), torch.randn(300, 2)
    xte, yte = torch.randn(50, 5), torch.randn(50, 2)
    res = surface(model, {"train": (xtr, ytr), "test": (xte, yte)}, dims=1, steps=7, span=2.0,
                  split="test", progress=False)
    assert res.summary["loss"] == "mse" and res.summary["num_samples"] == 50
    assert (res.table["j"] == 0).all() and (res.table["b"] == 0.0).all()
    assert res.grid().shape == (7,)
    check_against_slow(res, model, xte, yte, loss="mse")
    sub = surface(model, (xtr, ytr), dims=1, steps=3, max_samples=40, seed=5, progress=False)
    assert sub.summary["num_samples"] == 40
    again = surface(model, (xtr, ytr), dims=1, steps=3, max_samples=40, seed=5, progress=False)
    np.testing.assert_array_equal(sub.table["loss"], again.table["loss"])


def test_user_directions_and_result_save_load(tmp_path):
    model = make(MLP)
    x, y = data()
    d = filter_normalized_directions(model, 2, seed=4)
    flat = [torch.cat([t.reshape(-1) for t in di.values()]) for di in d]
    a = surface(model, (x, y), dims=2, steps=3, directions=flat, progress=False)
    b = surface(model, (x, y), dims=2, steps=3, seed=4, progress=False)
    assert a.summary["directions"] == "user"
    np.testing.assert_allclose(a.table["loss"], b.table["loss"], rtol=1e-6)
    b.save(tmp_path)
    back = SurfaceResult.load(tmp_path)
    pd_eq = back.table[list(COLUMNS)].reset_index(drop=True)
    np.testing.assert_allclose(pd_eq["loss"], b.table["loss"])
    assert back.summary["center_loss"] == b.summary["center_loss"]
    for k in b.directions[0]:
        assert torch.equal(back.directions[0][k], b.directions[0][k])
        assert torch.equal(back.directions[1][k], b.directions[1][k])


def test_pca_trajectory_plane():
    """Plant a trajectory in a known plane: the surface's directions span it, the projected
    trajectory is reported, and the grid equals the slow loop."""
    model = make(MLP, seed=1)
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    u = {n: torch.randn(p.shape, generator=g) for n, p in final.items()}
    v = {n: torch.randn(p.shape, generator=g) for n, p in final.items()}
    traj = [{n: final[n] + 0.1 * (3 - k) * u[n] + 0.05 * math.sin(k) * v[n] for n in final}
            for k in range(4)]
    x, y = data()
    res = surface(model, (x, y), dims=2, steps=3, directions="pca-trajectory",
                  trajectory=traj, progress=False)
    s = res.summary
    assert s["directions"] == "pca-trajectory"
    assert sum(s["explained_variance_ratio"]) == pytest.approx(1.0, abs=1e-5)
    assert res.trajectory_coords.shape == (4, 2)
    lo_a, hi_a = s["ranges"][0]
    assert lo_a <= res.trajectory_coords[:, 0].min() and hi_a >= res.trajectory_coords[:, 0].max()
    check_against_slow(res, model, x, y)
    # 1-D parameters are left out of the PCA by default (as for filter-normalized
    # directions); include_bias=True keeps them, and equals pca_directions' own result
    from deepscope.landscape.directions import pca_directions
    biases = [n for n, p in final.items() if p.dim() == 1]
    assert biases
    for d in res.directions:
        assert all(float(d[n].abs().max()) == 0.0 for n in biases)
    full = surface(model, (x, y), dims=2, steps=3, directions="pca-trajectory",
                   trajectory=traj, include_bias=True, progress=False)
    ref = pca_directions(traj, model, 2, include_bias=True, include_bn=False)
    for d, r in zip(full.directions, ref.directions):
        assert any(float(d[n].abs().max()) > 0 for n in biases)
        for n in d:
            torch.testing.assert_close(d[n], r[n].cpu())
    with pytest.raises(ConfigError, match="trajectory"):
        surface(model, (x, y), dims=2, steps=3, directions="pca-trajectory", progress=False)


class Stop(Exception):
    pass


def test_resume_interrupt_then_complete(tmp_path):
    model = make(MLP, seed=5)
    x, y = data()
    kw = dict(dims=2, steps=5, span=1.0, points_per_batch=4, progress=False)
    full = surface(model, (x, y), **kw)
    path = tmp_path / "surf.json"
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        surface(model, (x, y), resume=path, callback=stop_after_two, **kw)
    assert path.exists() and calls == [4, 8]
    seen = []
    res = surface(model, (x, y), resume=path, callback=lambda d, t: seen.append(d), **kw)
    assert res.summary["points_resumed"] == 8 and res.summary["points_computed"] == 17
    assert seen[0] == 12 and seen[-1] == 25 and len(seen) == 5  # only the missing chunks
    np.testing.assert_array_equal(res.table["loss"].to_numpy(), full.table["loss"].to_numpy())
    np.testing.assert_array_equal(res.table["accuracy"], full.table["accuracy"])
    # a complete file: nothing is recomputed
    done = surface(model, (x, y), resume=path, **kw)
    assert done.summary["points_computed"] == 0 and done.summary["evaluation"] == "resumed"
    np.testing.assert_array_equal(done.table["loss"], full.table["loss"])
    # different settings are refused, naming the difference
    with pytest.raises(ConfigError, match="steps"):
        surface(model, (x, y), resume=path, **{**kw, "steps": 4})
    with pytest.raises(ConfigError, match="seed"):
        surface(model, (x, y), resume=path, seed=1, **kw)
    other = make(MLP, seed=6)
    with pytest.raises(ConfigError, match="model"):
        surface(other, (x, y), resume=path, **kw)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable"):
        surface(model, (x, y), resume=bad, **kw)


def test_vmap_failure_falls_back_or_raises():
    spec = complete_arch_spec({"arch": "lstm", "input_shape": [8, 8], "num_outputs": 10,
                               "hidden": 8})
    model = build_model(spec, seed=0)
    x = torch.randn(40, 8, 8)
    y = torch.randint(0, 10, (40,))
    with pytest.raises(ModelError, match="vmap"):
        surface(model, (x, y), dims=1, steps=3, engine="vmap", progress=False)
    loop = surface(model, (x, y), dims=1, steps=3, progress=False)
    # small activations: "auto" tries vmap on the CPU, which has no LSTM batching rule here,
    # then the loop
    assert loop.summary["evaluation"] == "loop"
    assert loop.summary["fallback_reason"].startswith("vmap failed")
    seq = surface(model, (x, y), dims=1, steps=3, engine="sequential", progress=False)
    np.testing.assert_allclose(loop.table["loss"], seq.table["loss"], rtol=1e-6)
    check_against_slow(loop, model, x, y)


def test_bad_inputs():
    model = make(MLP)
    x, y = data(20)
    for kw, err in [({"dims": 3}, ConfigError), ({"steps": 1}, ConfigError),
                    ({"steps": (3, 3, 3)}, ConfigError), ({"span": 0}, ConfigError),
                    ({"span": (1.0, -1.0)}, ConfigError), ({"bn": "train"}, ConfigError),
                    ({"directions": "random"}, ConfigError), ({"split": "test"}, ConfigError),
                    ({"engine": "jit"}, ConfigError), ({"max_samples": 0}, ConfigError),
                    ({"directions": [torch.zeros(3), torch.zeros(3)]}, ShapeError),
                    ({"loss": "cross_entropy", "dims": 1}, None)]:
        if err is None:
            surface(model, (x, y), progress=False, steps=2, **kw)
            continue
        with pytest.raises(err):
            surface(model, (x, y), progress=False, steps=kw.pop("steps", 2), **kw)
    with pytest.raises(ShapeError):
        surface(model, (torch.randn(5, 3), torch.zeros(5, dtype=torch.long)), progress=False,
                steps=2)
    with pytest.raises(ConfigError):
        surface(model, (x, y.float()), loss="cross_entropy", progress=False, steps=2)


class ScaledInput(nn.Module):
    """The first layer's input depends on a parameter: no first-layer shortcut."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.inner = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.inner(x * self.scale)


class Shared(nn.Module):
    """The first Linear runs twice per forward: no shortcut."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.lin = nn.Linear(64, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(torch.tanh(self.lin(self.flat(x))))))


@pytest.mark.parametrize("name, builder, expect", [
    ("mlp", lambda: make(MLP), "fc1"), ("cnn", lambda: make(CNN), "features.conv1"),
    ("resnet", lambda: make(RESNET), "stem.conv"), ("scaled", ScaledInput, None),
    ("shared", Shared, None)])
def test_first_layer_shortcut_exact(name, builder, expect):
    torch.manual_seed(0)
    model = builder()
    x, y = data(70, seed=4)
    kw = dict(dims=2, steps=3, span=0.7, batch_size=32, progress=False)
    auto = surface(model, (x, y), **kw)  # fan-ins 64 and 25 are below the auto threshold
    assert auto.summary["first_layer_shortcut"] is None
    for engine in ("loop", "vmap"):
        on = surface(model, (x, y), engine=engine, first_layer=True, **kw)
        off = surface(model, (x, y), engine=engine, first_layer=False, **kw)
        assert on.summary["first_layer_shortcut"] == expect
        assert off.summary["first_layer_shortcut"] is None
        np.testing.assert_allclose(on.table["loss"], off.table["loss"], rtol=1e-5, atol=1e-6)
    check_against_slow(on, model, x, y)


def test_first_layer_auto_on_wide_input():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(300, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(50, 3, 100), torch.randint(0, 4, (50,))
    res = surface(model, (x, y), dims=2, steps=3, progress=False)
    assert res.summary["first_layer_shortcut"] == "1"
    check_against_slow(res, model, x, y)
    with pytest.raises(ConfigError):
        surface(model, (x, y), dims=1, steps=2, first_layer="yes", progress=False)


def test_auto_engine_on_cpu_follows_activation_size():
    from deepscope.landscape.surface_engines import CPU_VMAP_POINT_BYTES
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(20, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    x, y = torch.randn(400, 20), torch.randint(0, 10, (400,))
    # per point: (512 + 512 + 512 + 512 + 10) activations x 400 samples x 4 bytes > budget
    assert 2058 * 400 * 4 > CPU_VMAP_POINT_BYTES
    big = surface(model, (x, y), dims=1, steps=3, batch_size=400, progress=False)
    assert big.summary["evaluation"] == "loop" and "KiB" in big.summary["engine_note"]
    small = surface(model, (x[:40], y[:40]), dims=1, steps=3, batch_size=40, progress=False)
    assert small.summary["evaluation"] == "vmap" and "KiB" in small.summary["engine_note"]
    # a smaller batch_size makes a point's activations smaller too
    chunked = surface(model, (x, y), dims=1, steps=3, batch_size=40, progress=False)
    assert chunked.summary["evaluation"] == "vmap"
    np.testing.assert_allclose(chunked.table["loss"], big.table["loss"], rtol=1e-5)
    check_against_slow(big, model, x, y)


@pytest.mark.parametrize("engine", ["vmap", "loop"])
def test_cross_entropy_sum_matches_torch_and_keeps_ignore_index(engine):
    torch.manual_seed(3)
    model = make(MLP, seed=5)
    x, y = data(60, seed=6)
    res = surface(model, (x, y), dims=1, steps=3, span=0.5, engine=engine, progress=False)
    check_against_slow(res, model, x, y)
    # labels F.cross_entropy ignores (-100) keep torch's own formula (mean over the rest)
    y2 = y.clone()
    y2[:10] = -100
    ign = surface(model, (x, y2), dims=1, steps=3, span=0.5, engine=engine, progress=False)
    with torch.no_grad():
        out = model(x)
    assert ign.summary["center_loss"] == pytest.approx(
        float(F.cross_entropy(out, y2, reduction="sum")) / 60, rel=1e-5)


def test_hessian_directions_are_the_top_eigenvectors():
    """directions='hessian': unit, orthogonal, H d = λ d against a dense float64 Hessian; the
    loss along d1 curves by λ1; frozen parameters get zero directions."""
    from deepscope._params import flatten, unflatten
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    params = {n: p.detach() for n, p in model.named_parameters()}
    flat, layout = flatten(params)

    def loss_at(vec):
        return F.cross_entropy(torch.func.functional_call(model, unflatten(vec, layout), (x,)),
                               y)

    H = torch.func.hessian(loss_at)(flat)
    lam, U = torch.linalg.eigh(H)
    res = surface(model, (x, y), dims=2, steps=3, span=0.5, directions="hessian",
                  progress=False)
    np.testing.assert_allclose(res.summary["hessian_eigenvalues"], lam.flip(0)[:2].numpy(),
                               rtol=1e-6)
    D = [flatten(d)[0] for d in res.directions]
    for i, d in enumerate(D):
        assert float(d.norm()) == pytest.approx(1.0, abs=1e-9)
        torch.testing.assert_close(H @ d, float(lam[-1 - i]) * d, atol=1e-6, rtol=0)
    assert abs(float(D[0] @ D[1])) < 1e-8
    check_against_slow(res, model, x, y)
    # curvature along d1: (L(a) - 2 L(0) + L(-a)) / a^2 -> lambda_1
    a = 1e-3
    line = surface(model, (x, y), dims=1, steps=3, span=a, directions="hessian",
                   progress=False)
    L = line.table["loss"].to_numpy()
    assert (L[0] - 2 * L[1] + L[2]) / a ** 2 == pytest.approx(float(lam[-1]), rel=1e-3)
    # frozen parameters: zero directions there
    model[0].weight.requires_grad_(False)
    frozen = surface(model, (x, y), dims=1, steps=3, directions="hessian", progress=False)
    assert float(frozen.directions[0]["0.weight"].abs().max()) == 0.0
    assert float(frozen.directions[0]["2.weight"].abs().max()) > 0.0
    with pytest.raises(ConfigError, match="trajectory"):
        surface(model, (x, y), dims=1, steps=3, directions="hessian", trajectory=[model],
                progress=False)
