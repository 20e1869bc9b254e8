"""measures(): every number against a reference (closed form, numpy, torch.linalg, manual sums)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepscope._params import state_fingerprint
from deepscope.errors import ConfigError, ShapeError
from deepscope.generalization.bn_fold import fold_batchnorm
from deepscope.generalization.flatness import (NoiseEvaluator, accuracy_drop, pacbayes_sigma,
                                               sharpness_alpha, worst_case_ascent)
from deepscope.generalization.measures import MEASURES, measures
from deepscope.generalization.norms import path_norm
from deepscope.nets import build_model, complete_arch_spec

INIT_MEASURES = {n for n, (_, needs) in MEASURES.items() if "init" in needs}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Hundreds of tiny forward passes: intra-op threads on 2 shared cores only spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained():
    """A 64-16-10 ReLU MLP trained on 300 digits (train accuracy ~0.99), with its init."""
    from deepscope.workflows import train_and_save
    return train_and_save({"arch": "mlp", "widths": [16]}, {"name": "digits", "n_train": 300},
                          {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 6,
                           "batch_size": 30, "seed": 0}, None, progress=False)


def _mlp(widths, d_in=5, d_out=3, seed=0, batchnorm=False):
    spec = complete_arch_spec({"arch": "mlp", "input_shape": [d_in], "num_outputs": d_out,
                               "widths": widths, "batchnorm": batchnorm})
    return build_model(spec, seed=seed).eval()


# ------------------------------------------------------------------ path norm

def test_path_norm_two_layer_closed_form():
    m = _mlp([4])
    W, b, V, c = (t.detach() for t in (m.fc1.weight, m.fc1.bias, m.out.weight, m.out.bias))
    # Σ_k [Σ_i V_ki² (Σ_j W_ij² + b_i²) + c_k²]: every path's squared weights, biases too
    expected = float(((V ** 2) @ ((W ** 2).sum(1) + b ** 2) + c ** 2).sum())
    assert path_norm(m, (5,)) == pytest.approx(expected, rel=1e-6)
    x = torch.randn(7, 5)
    res = measures(m, (x, torch.randint(0, 3, (7,))), which=["path_norm"], progress=False)
    assert res.summary["path_norm"] == pytest.approx(expected, rel=1e-6)


def test_path_norm_three_layer_path_sum():
    m = _mlp([4, 6], d_in=3, d_out=2, seed=1)
    W1, b1, W2, b2, W3, b3 = (t.detach() ** 2 for t in (m.fc1.weight, m.fc1.bias, m.fc2.weight,
                                                         m.fc2.bias, m.out.weight, m.out.bias))
    # explicit enumeration of input->output paths plus the paths starting at each bias
    total = 0.0
    for k in range(2):
        total += float(b3[k])
        for i in range(6):
            total += float(W3[k, i] * b2[i])
            for h in range(4):
                total += float(W3[k, i] * W2[i, h] * b1[h])
                for j in range(3):
                    total += float(W3[k, i] * W2[i, h] * W1[h, j])
    assert path_norm(m, (3,)) == pytest.approx(total, rel=1e-6)


def test_path_norm_omitted_for_tanh_network():
    spec = complete_arch_spec({"arch": "mlp", "input_shape": [5], "num_outputs": 3,
                               "widths": [4], "activation": "tanh"})
    m = build_model(spec, seed=0)
    res = measures(m, (torch.randn(6, 5), torch.arange(6) % 3), which=["path_norm", "params"],
                   progress=False)
    assert "path_norm" not in res.summary and "Tanh" in res.settings["omitted"]["path_norm"]
    assert res.summary["params"] == sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ norms and distances

def test_spectral_and_frobenius_norms_against_torch_linalg():
    spec = complete_arch_spec({"arch": "cnn", "input_shape": [1, 8, 8], "num_outputs": 4,
                               "channels": [3, 5], "fc": [6, 7]})
    m = build_model(spec, seed=0).eval()
    x = torch.randn(10, 1, 8, 8)
    which = ["log_prod_of_spec", "log_sum_of_spec", "fro_over_spec", "log_prod_of_fro",
             "log_sum_of_fro", "param_norm"]
    res = measures(m, (x, torch.arange(10) % 4), which=which, progress=False)
    mats = [mod.weight.detach().double().reshape(mod.weight.shape[0], -1)
            for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    d = len(mats)
    assert d == 5 and len(res.layers) == 5
    spec2 = np.array([float(torch.linalg.matrix_norm(w, ord=2)) ** 2 for w in mats])
    fro2 = np.array([float((w ** 2).sum()) for w in mats])
    s = res.summary
    assert s["log_prod_of_spec"] == pytest.approx(np.log(spec2).sum(), rel=1e-10)
    assert s["log_sum_of_spec"] == pytest.approx(np.log(d * np.prod(spec2) ** (1 / d)), rel=1e-10)
    assert s["fro_over_spec"] == pytest.approx((fro2 / spec2).sum(), rel=1e-10)
    assert s["log_prod_of_fro"] == pytest.approx(np.log(fro2).sum(), rel=1e-10)
    assert s["log_sum_of_fro"] == pytest.approx(np.log(d * np.prod(fro2) ** (1 / d)), rel=1e-10)
    assert s["param_norm"] == pytest.approx(fro2.sum(), rel=1e-10)
    assert list(res.table.columns) == ["measure", "value", "family", "note"]
    assert list(res.table["measure"]) == which


def test_norms_use_batchnorm_folded_matrices():
    m = _mlp([6], batchnorm=True)
    bn = m.bn1
    bn.running_var.fill_(4.0)
    bn.weight.data.fill_(3.0)
    x = torch.randn(12, 5)
    res = measures(m, (x, torch.arange(12) % 3), which=["param_norm"], progress=False)
    folded = fold_batchnorm(m, x).weights
    expected = sum(float((w.double() ** 2).sum()) for w in folded.values())
    assert res.summary["param_norm"] == pytest.approx(expected, rel=1e-9)
    a = 3.0 / math.sqrt(4.0 + bn.eps)  # fc1 scaled by a: differs from the raw weights
    raw = float((m.fc1.weight.detach().double() ** 2).sum() * a ** 2
                + (m.out.weight.detach().double() ** 2).sum())
    assert res.summary["param_norm"] == pytest.approx(raw, rel=1e-6)


def test_distances_from_init_against_manual_sums(trained):
    model, init = trained.model, trained.init_params
    which = ["fro_dist", "dist_spec_init", "dist_from_init", "log_spec_init_main"]
    res = measures(model, trained.dataset, init_params=init, which=which, progress=False)
    fro2, spec2, dsp2, total = 0.0, [], 0.0, 0.0
    for name in ("fc1", "out"):
        w = getattr(model, name).weight.detach().double()
        d = w - init[f"{name}.weight"].double()
        fro2 += float((d ** 2).sum())
        dsp2 += float(torch.linalg.matrix_norm(d, ord=2)) ** 2
        spec2.append(float(torch.linalg.matrix_norm(w, ord=2)) ** 2)
        row = res.layers.set_index("layer").loc[name]
        assert row["dist_frobenius"] == pytest.approx(float(d.norm()), rel=1e-10)
    for name, p in model.named_parameters():
        total += float(((p.detach().double() - init[name].double()) ** 2).sum())
    s = res.summary
    assert s["fro_dist"] == pytest.approx(fro2, rel=1e-10)
    assert s["dist_spec_init"] == pytest.approx(dsp2, rel=1e-10)
    assert s["dist_from_init"] == pytest.approx(math.sqrt(total), rel=1e-10)
    # (29): log Π‖W‖₂² / γ² + log Σ ‖W-W0‖_F² / ‖W‖₂²
    g = measures(model, trained.dataset, which=["output_margin"],
                 progress=False).summary["output_margin"]
    d_f = [float(((getattr(model, n).weight.detach().double()
                   - init[f"{n}.weight"].double()) ** 2).sum()) for n in ("fc1", "out")]
    ref = np.log(spec2).sum() - 2 * np.log(g) + np.log(sum(a / b for a, b in zip(d_f, spec2)))
    assert s["log_spec_init_main"] == pytest.approx(ref, rel=1e-8)


def test_measures_missing_init_are_omitted_not_nan(trained):
    res = measures(trained.model, trained.dataset, which=None, progress=False,
                   max_samples=100)
    assert not INIT_MEASURES & set(res.summary)
    assert not INIT_MEASURES & set(res.table["measure"])
    for n in INIT_MEASURES:
        assert "init_params" in res.settings["omitted"][n]
    vals = np.array(list(res.summary.values()), dtype=float)
    assert not np.isnan(vals).any()
    assert res.settings["num_samples"] == 100 and res.settings["m"] == 300


def test_bad_inputs_raise_deepscope_errors(trained):
    with pytest.raises(ConfigError, match="unknown measure 'margin'"):
        measures(trained.model, trained.dataset, which=["margin"], progress=False)
    bad = dict(trained.init_params)
    bad["fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ShapeError, match="fc1.weight"):
        measures(trained.model, trained.dataset, init_params=bad, which=["fro_dist"],
                 progress=False)
    with pytest.raises(ConfigError):
        measures(trained.model, [1, 2, 3], progress=False)


# ------------------------------------------------------------------ margins

def test_output_margin_percentile_against_numpy(trained):
    x, y = trained.dataset.split("train")
    res = measures(trained.model, (x, y), which="output_margin,inverse_margin,"
                   "path_norm_over_margin,path_norm", progress=False)
    with torch.no_grad():
        logits = trained.model.eval()(x).double().numpy()
    margins = []
    for row, label in zip(logits, y.numpy()):
        others = np.delete(row, label)
        margins.append(row[label] - others.max())
    gamma = np.percentile(np.array(margins), 10)
    s = res.summary
    assert s["output_margin"] == pytest.approx(gamma, rel=1e-9)
    assert s["inverse_margin"] == pytest.approx(1 / gamma ** 2, rel=1e-9)
    assert s["path_norm_over_margin"] == pytest.approx(s["path_norm"] / gamma ** 2, rel=1e-9)


def test_nonpositive_margin_omits_margin_normalized_measures():
    m = _mlp([4])
    nn.init.zeros_(m.out.weight)
    nn.init.zeros_(m.out.bias)  # all logits equal: every margin is 0
    res = measures(m, (torch.randn(8, 5), torch.arange(8) % 3),
                   which=["output_margin", "inverse_margin", "log_prod_of_fro_over_margin",
                          "log_prod_of_fro"], progress=False)
    assert res.summary["output_margin"] == 0.0
    assert set(res.summary) == {"output_margin", "log_prod_of_fro"}
    assert "≤ 0" in res.settings["omitted"]["inverse_margin"]


def test_unfoldable_batchnorm_omits_norm_measures_only():
    m = nn.Sequential(nn.Flatten(), nn.Linear(5, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.ReLU(),
                      nn.Linear(4, 3)).eval()
    res = measures(m, (torch.randn(8, 5), torch.arange(8) % 3),
                   which=["param_norm", "path_norm", "params", "pacbayes_sigma"],
                   progress=False)
    assert set(res.summary) == {"params", "pacbayes_sigma"}
    assert "cannot fold" in res.settings["omitted"]["param_norm"]
    assert res.layers.empty and "cannot fold" in res.settings["layers_note"]


def test_regression_data_omits_classification_measures():
    m = _mlp([4], d_out=2)
    res = measures(m, (torch.randn(9, 5), torch.randn(9, 2)), progress=False)
    assert "output_margin" not in res.summary and "pacbayes_flatness" not in res.summary
    assert "classification" in res.settings["omitted"]["sharpness_flatness"]
    assert "param_norm" in res.summary and "path_norm" in res.summary


# ------------------------------------------------------------------ PAC-Bayes flatness

def test_pacbayes_sigma_brackets_the_accuracy_drop(trained):
    x, y = trained.dataset.split("train")
    ev = NoiseEvaluator(trained.model, x, y)
    r = pacbayes_sigma(ev, seed=0)
    s = r.value
    assert 0 < s < 2 and r.upper - s <= 2 / 2 ** 15 + 1e-12 and len(r.steps) == 15
    assert r.drop_at_value <= 0.1 < r.drop_at_upper
    assert accuracy_drop(ev, s, seed=0) == pytest.approx(r.drop_at_value)
    # fresh Monte-Carlo draws (another seed, more of them): 25% more noise drops accuracy
    # by more than 0.1, 25% less by less (the drop is ~0.18 and ~0.04 there)
    assert accuracy_drop(ev, 1.25 * s, draws=30, seed=11) > 0.1
    assert accuracy_drop(ev, 0.75 * s, draws=30, seed=11) <= 0.1


def test_pacbayes_is_seeded_and_model_untouched(trained):
    model = trained.model
    model.train()
    fp = state_fingerprint(model)
    which = ["pacbayes_sigma", "pacbayes_flatness", "pacbayes_orig", "pacbayes_init",
             "pacbayes_mag_sigma", "pacbayes_mag_flatness", "pacbayes_mag_orig",
             "pacbayes_mag_init"]
    a = measures(model, trained.dataset, init_params=trained.init_params, which=which,
                 seed=3, max_samples=120, progress=False)
    b = measures(model, trained.dataset, init_params=trained.init_params, which=which,
                 seed=3, max_samples=120, progress=False)
    assert state_fingerprint(model) == fp and model.training
    model.eval()
    assert a.summary == b.summary
    s = a.summary
    sig, m = s["pacbayes_sigma"], 300
    theta = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    theta0 = torch.cat([trained.init_params[n].double().reshape(-1)
                        for n, _ in model.named_parameters()])
    assert s["pacbayes_flatness"] == pytest.approx(1 / sig ** 2, rel=1e-12)
    ref_init = float(((theta - theta0) ** 2).sum()) / (4 * sig ** 2) + math.log(m / sig) + 10
    ref_orig = float((theta ** 2).sum()) / (4 * sig ** 2) + math.log(m / sig) + 10
    assert s["pacbayes_init"] == pytest.approx(ref_init, rel=1e-10)
    assert s["pacbayes_orig"] == pytest.approx(ref_orig, rel=1e-10)
    # magnitude-aware bound (56), written out element by element in numpy
    sm, eps, omega = s["pacbayes_mag_sigma"], 1e-3, theta.numel()
    dv = (theta - theta0).numpy()
    num = eps ** 2 + (sm ** 2 + 1) * np.sum(dv ** 2) / omega
    ref_mag = 0.25 * sum(np.log(num / (eps ** 2 + sm ** 2 * v ** 2)) for v in dv) \
        + np.log(m / sm) + 10
    assert s["pacbayes_mag_init"] == pytest.approx(ref_mag, rel=1e-9)
    assert s["pacbayes_mag_flatness"] == pytest.approx(1 / sm ** 2, rel=1e-12)


def test_magnitude_aware_noise_has_the_stated_variance():
    m = _mlp([3])
    ev = NoiseEvaluator(m, torch.randn(4, 5), torch.arange(4) % 3)
    from deepscope.generalization.flatness import _normal_draw
    w = ev.params["fc1.weight"]
    zs = torch.stack([_normal_draw(ev.params, 0, k)["fc1.weight"] for k in range(4000)])
    sigma, eps = 0.5, 1e-3
    u = zs * torch.sqrt(sigma ** 2 * w ** 2 + eps ** 2)  # as accuracy_drop builds it
    var = u.double().var(0)
    ref = sigma ** 2 * w.double() ** 2 + eps ** 2
    assert torch.allclose(var, ref, rtol=0.1)  # 4000 draws: ~2.2% standard error


# ------------------------------------------------------------------ sharpness

@pytest.fixture(scope="module")
def softmax_regression():
    torch.manual_seed(0)
    x = torch.randn(60, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    m = _mlp([], d_in=5, d_out=3)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval(), x, y


def test_sharpness_ascent_is_bounded_by_the_box(softmax_regression):
    m, x, y = softmax_regression
    ev = NoiseEvaluator(m, x, y)
    alpha = 0.05
    asc = worst_case_ascent(ev, alpha, steps=10)
    w = ev.params
    for n, u in asc.perturbation.items():
        assert torch.all(u.abs() <= alpha + 1e-7)
    # |∂L/∂W_cj| ≤ mean_n |x_nj| and |∂L/∂b_c| ≤ 1 (|p - y| ≤ 1): a first-order box bound
    rw, rb = asc.radius["out.weight"], asc.radius["out.bias"]
    bound = float((rw * x.abs().mean(0)[None, :]).sum() + rb.sum())
    assert 0 < asc.increase <= bound
    # ascent beats random corners of the box
    g = torch.Generator().manual_seed(0)
    base = ev.loss(w)
    for _ in range(5):
        rnd = {n: r * (torch.randint(0, 2, r.shape, generator=g) * 2 - 1)
               for n, r in asc.radius.items()}
        assert ev.loss({n: w[n] + rnd[n] for n in w}) - base <= asc.increase
    assert worst_case_ascent(ev, 0.0).increase == 0.0


def test_sharpness_alpha_brackets_and_measure(softmax_regression):
    m, x, y = softmax_regression
    ev = NoiseEvaluator(m, x, y)
    r = sharpness_alpha(ev, depth=10, steps=5)
    assert 0 <= r.value < r.upper <= 2
    drop = ev.clean_accuracy - worst_case_ascent(ev, r.value, steps=5).accuracy
    assert drop == pytest.approx(r.drop_at_value) and drop <= 0.1
    if not r.hit_upper_end:
        up = ev.clean_accuracy - worst_case_ascent(ev, r.upper, steps=5).accuracy
        assert up > 0.1
    res = measures(m, (x, y), which=["sharpness_alpha", "sharpness_flatness",
                                     "sharpness_orig"], progress=False)
    a = res.summary["sharpness_alpha"]
    assert a > 0 and res.summary["sharpness_flatness"] == pytest.approx(1 / a ** 2)
    omega = sum(p.numel() for p in m.parameters())
    w2 = sum(float((p.detach().double() ** 2).sum()) for p in m.parameters())
    ref = w2 * math.log(2 * omega) / (4 * a ** 2) + math.log(60 / a) + 10
    assert res.summary["sharpness_orig"] == pytest.approx(ref, rel=1e-10)


# ------------------------------------------------------------------ HT-SR and the whole run

def test_htsr_summaries_are_spectra_means(trained):
    from deepscope.weights.probe import spectra
    res = measures(trained.model, trained.dataset,
                   which=["alpha", "alpha_weighted", "log_norm", "log_spectral_norm",
                          "stable_rank"], progress=False)
    ref = spectra(trained.model, progress=False).summary
    for k in ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank"):
        if math.isfinite(ref[k]):
            assert res.summary[k] == pytest.approx(ref[k], rel=1e-12)
        else:
            assert k in res.settings["omitted"]


def test_full_run_on_batchnorm_cnn_keeps_model_and_reports_every_measure():
    spec = complete_arch_spec({"arch": "cnn", "input_shape": [1, 8, 8], "num_outputs": 3,
                               "channels": [3, 4], "fc": [6, 5], "batchnorm": True})
    m = build_model(spec, seed=0)
    init = {k: v.clone() for k, v in m.named_parameters()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 1, 8, 8, generator=g)
    y = torch.arange(30) % 3
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    fp = state_fingerprint(m)
    res = measures(m, (x, y), init_params=init, progress=False)
    assert state_fingerprint(m) == fp and m.training
    omitted = res.settings["omitted"]
    assert set(res.summary) | set(omitted) == set(MEASURES)
    assert set(omitted) <= {"output_margin", "alpha", "alpha_weighted", "log_norm",
                            "log_spectral_norm", "stable_rank"} | {
        n for n, (_, needs) in MEASURES.items() if "margin" in needs}
    assert ["features.bn1", "features.conv2", "following"] in res.settings["batchnorm_folds"]
    assert all(math.isfinite(v) or v == math.inf for v in res.summary.values())
    d = res.to_dict()
    assert d["kind"] == "measures" and len(d["layers"]) == 5  # 2 conv + 3 linear
