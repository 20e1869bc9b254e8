"""align(): weight matching keeps the function, recovers permutations, lowers barriers."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import deepscope
from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ModelError
from deepscope.landscape.align import align, apply_permutations, permutation_spec
from deepscope.landscape.interpolate import interpolate
from deepscope.nets import build_model


def _randomize_bn(model, seed):
    """Non-default running statistics and affine parameters in every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model


def _sequential_cnn():
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.Tanh()), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 7), nn.BatchNorm1d(7), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(7, 3), nn.LogSoftmax(dim=1))


CASES = {
    "mlp_bn": (lambda s: build_model({"arch": "mlp", "input_shape": [12], "num_outputs": 4,
                                      "widths": [10, 9, 8], "batchnorm": True}, seed=s),
               (12,)),
    "cnn2d_bn": (lambda s: build_model({"arch": "cnn", "input_shape": [1, 8, 8],
                                        "num_outputs": 5, "width": 0.06,
                                        "batchnorm": True}, seed=s), (1, 8, 8)),
    "cnn1d": (lambda s: build_model({"arch": "cnn", "input_shape": [20], "num_outputs": 3,
                                     "width": 0.05}, seed=s), (20,)),
    "resnet_bn": (lambda s: build_model({"arch": "resnet", "input_shape": [3, 8, 8],
                                         "num_outputs": 5, "width": 4, "blocks": [2, 1, 2],
                                         "batchnorm": True}, seed=s), (3, 8, 8)),
    "resnet_plain_1d": (lambda s: build_model({"arch": "resnet", "input_shape": [2, 16],
                                               "num_outputs": 3, "width": 3, "blocks": [1, 2],
                                               "batchnorm": False}, seed=s), (2, 16)),
    "sequential": (lambda s: (torch.manual_seed(s), _sequential_cnn())[1], (2, 8, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_alignment_keeps_the_function(case):
    make, shape = CASES[case]
    a, b = _randomize_bn(make(0), 1), _randomize_bn(make(1), 2)
    a.eval(), b.eval()
    fa, fb = state_fingerprint(a), state_fingerprint(b)
    res = align(a, b)
    assert state_fingerprint(a) == fa and state_fingerprint(b) == fb
    assert res.model is not b
    x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), b(x), atol=1e-5, rtol=1e-5)
    # the units really moved and the parameters got closer to a's
    s = res.summary
    assert s["fraction_moved"] > 0.3 and s["converged"]
    assert s["distance_after"] < s["distance_before"]
    assert s["objective_after"] > s["objective_before"]
    # the summary numbers against direct computations on the returned model
    pa = dict(a.named_parameters())
    pm = dict(res.model.named_parameters())
    obj = sum((pa[k].double() * pm[k].double()).sum().item() for k in pa)
    dist = math.sqrt(sum(((pa[k].double() - pm[k].double()) ** 2).sum().item() for k in pa))
    assert s["objective_after"] == pytest.approx(obj, rel=1e-9)
    assert s["distance_after"] == pytest.approx(dist, rel=1e-9)
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in res.permutations.values())
    assert s["units_moved"] == moved
    assert s["fraction_moved"] == pytest.approx(moved / sum(map(len, res.permutations.values())))
    # the table: one row per round, the last one unchanged, objective never decreasing
    t = res.table
    assert list(t["round"]) == list(range(1, s["rounds"] + 1))
    assert t["groups_changed"].iloc[-1] == 0
    assert t["objective"].iloc[-1] == pytest.approx(s["objective_after"], rel=1e-12)
    assert (np.diff(np.r_[s["objective_before"], t["objective"]]) >= -1e-9).all()


def test_train_mode_batchnorm_is_also_equivariant():
    make, shape = CASES["resnet_bn"]
    a, b = make(0), _randomize_bn(make(1), 4)
    b.train()
    res = align(a, b)
    assert res.model.training and b.training
    x = torch.randn(8, *shape)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), b(x), atol=1e-5, rtol=1e-5)


def _permute_mlp(model, perms):
    """Reference: permute the hidden units of a deepscope MLP (fc{i}, bn{i}, out) by hand."""
    m = copy.deepcopy(model)
    hidden = [n for n, mod in m.named_children() if n.startswith("fc")]
    with torch.no_grad():
        for i, name in enumerate(hidden):
            p = perms[i]
            fc = getattr(m, name)
            fc.weight.copy_(fc.weight[p])
            fc.bias.copy_(fc.bias[p])
            bn = getattr(m, f"bn{i + 1}", None)
            if bn is not None:
                for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                    t.copy_(t[p])
            nxt = getattr(m, hidden[i + 1]) if i + 1 < len(hidden) else m.out
            nxt.weight.copy_(nxt.weight[:, p])
    return m


def test_recovers_a_permuted_copy_exactly_mlp():
    a = _randomize_bn(build_model({"arch": "mlp", "input_shape": [12], "num_outputs": 4,
                                   "widths": [20, 15], "batchnorm": True}, seed=0), 5).eval()
    g = torch.Generator().manual_seed(1)
    perms = [torch.randperm(20, generator=g), torch.randperm(15, generator=g)]
    b = _permute_mlp(a, perms)
    x = torch.randn(6, 12)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-5)  # the reference is valid
    res = align(a, b)
    for k, v in a.state_dict().items():
        assert torch.equal(res.model.state_dict()[k], v), k
    # unit i of the aligned model is unit p[i] of b, and b's unit j is a's perms[j]
    inv = [torch.argsort(p) for p in perms]
    assert torch.equal(res.permutations["fc1"], inv[0])
    assert torch.equal(res.permutations["fc2"], inv[1])
    assert res.summary["distance_after"] == 0.0
    norm2 = sum((p.double() ** 2).sum().item() for p in a.parameters())
    assert res.summary["objective_after"] == pytest.approx(norm2, rel=1e-12)


@pytest.mark.parametrize("case", ["resnet_bn", "cnn2d_bn", "sequential"])
def test_recovers_a_permuted_copy_exactly(case):
    make, _ = CASES[case]
    a = _randomize_bn(make(0), 7).eval()
    spec = permutation_spec(a)
    g = torch.Generator().manual_seed(2)
    perms = {k: torch.randperm(n, generator=g) for k, n in spec.sizes.items()}
    b = copy.deepcopy(a)
    b.load_state_dict(apply_permutations(spec, perms, a.state_dict()))
    assert not all(torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items())
    res = align(a, b)
    for k, v in a.state_dict().items():
        assert torch.equal(res.model.state_dict()[k], v), k
    assert res.summary["distance_after"] == 0.0


def _brute_objective(a, b, hidden, perm):
    """Σ⟨W_a, P W_b⟩ of a one-hidden-layer MLP (fc1, out) for the permutation perm."""
    fa, fb = a.fc1, b.fc1
    with torch.no_grad():
        return float((fa.weight.double() * fb.weight[perm].double()).sum()
                     + (fa.bias.double() * fb.bias[perm].double()).sum()
                     + (a.out.weight.double() * b.out.weight[:, perm].double()).sum()
                     + (a.out.bias.double() * b.out.bias.double()).sum())


def test_single_group_is_the_global_optimum():
    spec = {"arch": "mlp", "input_shape": [6], "num_outputs": 3, "widths": [6]}
    a, b = build_model(spec, seed=0), build_model(spec, seed=1)
    res = align(a, b)
    best = max(_brute_objective(a, b, 6, list(p)) for p in itertools.permutations(range(6)))
    assert res.summary["objective_after"] == pytest.approx(best, rel=1e-10)
    assert _brute_objective(a, b, 6, res.permutations["fc1"].tolist()) == pytest.approx(best)
    assert res.summary["objective_before"] == pytest.approx(
        _brute_objective(a, b, 6, list(range(6))), rel=1e-10)


def test_result_is_a_coordinatewise_optimum():
    """No single group can be improved by any permutation with the others fixed."""
    spec = {"arch": "mlp", "input_shape": [5], "num_outputs": 2, "widths": [5, 4]}
    a, b = build_model(spec, seed=3), build_model(spec, seed=4)
    res = align(a, b, seed=1)
    sp = res.spec
    pa = {k: v.double() for k, v in a.named_parameters()}
    pb = {k: v.double() for k, v in b.named_parameters()}

    def objective(perms):
        pm = apply_permutations(sp, perms, pb)
        return sum((pa[k] * pm[k]).sum().item() for k in pa)

    got = objective(res.permutations)
    assert got == pytest.approx(res.summary["objective_after"], rel=1e-12)
    for g, n in sp.sizes.items():
        for p in itertools.permutations(range(n)):
            trial = dict(res.permutations, **{g: torch.tensor(p)})
            assert objective(trial) <= got + 1e-9


def test_seeded_and_deterministic():
    make, _ = CASES["resnet_bn"]
    a, b = make(0), make(1)
    r1, r2 = align(a, b, seed=5), align(a, b, seed=5)
    for g in r1.permutations:
        assert torch.equal(r1.permutations[g], r2.permutations[g])
    assert r1.table.equals(r2.table)
    r3 = align(a, b, max_iter=1)
    assert r3.summary["rounds"] == 1 and len(r3.table) == 1
    assert r3.summary["converged"] == (r3.table["groups_changed"].iloc[0] == 0)


def test_permute_other_states_with_the_result():
    make, _ = CASES["mlp_bn"]
    a, b = make(0), make(1)
    res = align(a, b)
    params = {k: v.detach().clone() for k, v in b.named_parameters()}
    out = res.permute(params)
    for k, v in res.model.named_parameters():
        assert torch.equal(out[k], v)


@pytest.fixture(scope="module")
def trained_pair():
    data = deepscope.load_dataset("digits", n_train=400, n_test=150)
    models = []
    for seed in (0, 1):
        m = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10,
                         "widths": [64]}, seed=seed)
        r = deepscope.train(m, data, deepscope.TrainConfig(
            optimizer="sgd", lr=0.05, momentum=0.9, epochs=6, batch_size=32, seed=seed),
            progress=False)
        models.append(r.model.eval())
    return data, models


def test_barrier_drops_after_alignment(trained_pair):
    data, (a, b) = trained_pair
    raw = interpolate(a, b, data, steps=11, progress=False)
    res = align(a, b)
    aligned = interpolate(a, res.model, data, steps=11, progress=False)
    # same function at t = 1
    assert aligned.summary["test_loss_b"] == pytest.approx(raw.summary["test_loss_b"],
                                                           rel=1e-5)
    assert raw.barrier("train") > 0.05
    assert aligned.barrier("train") < 0.5 * raw.barrier("train")
    assert aligned.barrier("test") < raw.barrier("test")


def test_unsupported_models_raise_model_error():
    lstm = build_model({"arch": "lstm", "input_shape": [5, 3], "num_outputs": 2}, seed=0)
    with pytest.raises(ModelError, match="LSTMClassifier"):
        align(lstm, copy.deepcopy(lstm))
    seq = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ModelError, match="'1'.*LayerNorm"):
        align(seq, copy.deepcopy(seq))
    grouped = nn.Sequential(nn.Conv1d(4, 4, 3, groups=2), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8, 2))
    with pytest.raises(ModelError, match="grouped convolution '0'"):
        align(grouped, copy.deepcopy(grouped))
    nonflat = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ModelError, match="without a Flatten"):
        align(nonflat, copy.deepcopy(nonflat))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) + x

    with pytest.raises(ModelError, match="unsupported model Custom"):
        align(Custom(), Custom())


def test_bad_inputs():
    make, _ = CASES["mlp_bn"]
    a = make(0)
    other = build_model({"arch": "mlp", "input_shape": [12], "num_outputs": 4,
                         "widths": [10, 9, 7], "batchnorm": True}, seed=0)
    with pytest.raises(ModelError, match="different architectures"):
        align(a, other)
    with pytest.raises(ConfigError, match="max_iter"):
        align(a, make(1), max_iter=0)
