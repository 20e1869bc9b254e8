"""CUDA paths: the same results on the GPU as on the CPU (skipped without a GPU).

Run on a machine with CUDA: ``python -m pytest tests/test_cuda_paths.py``.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import deepscope
from deepscope._params import state_fingerprint
from deepscope.nets import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def digits():
    return deepscope.load_dataset("digits", n_train=400, n_test=200)


def _mlp(d, seed=0):
    return build_model({"arch": "mlp", "input_shape": list(d.input_shape),
                        "num_outputs": d.num_outputs, "widths": [64, 32]}, seed=seed)


def test_train_on_cuda_matches_cpu_closely(digits):
    cfg = dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=64, epochs=3, seed=0)
    cpu = deepscope.train(_mlp(digits), digits, deepscope.TrainConfig(**cfg), progress=False)
    gpu = deepscope.train(_mlp(digits), digits, deepscope.TrainConfig(device="cuda", **cfg),
                          progress=False)
    assert next(gpu.model.parameters()).is_cuda
    assert gpu.metrics["train_loss"] == pytest.approx(cpu.metrics["train_loss"], rel=1e-3)
    ev = deepscope.evaluate(gpu.model, digits)
    assert ev["loss"] == pytest.approx(gpu.metrics["test_loss"], rel=1e-5)


def test_spectra_on_cuda_matches_cpu(digits):
    m = _mlp(digits)
    ref = deepscope.spectra(m, progress=False).table.set_index("layer")
    g = copy.deepcopy(m).cuda()
    fp = state_fingerprint(g)
    got = deepscope.spectra(g, progress=False).table.set_index("layer")
    assert state_fingerprint(g) == fp
    for col in ("lambda_max", "log_norm", "stable_rank", "mp_sigma"):
        assert got[col].to_numpy() == pytest.approx(ref[col].to_numpy(), rel=1e-4)


def test_hessian_on_cuda_matches_cpu(digits):
    m = _mlp(digits).eval()
    x, y = digits.split("train")
    ref = deepscope.hessian(m, (x, y), which="top", k=2, progress=False)
    g = copy.deepcopy(m).cuda()
    got = deepscope.hessian(g, (x, y), which="top", k=2, progress=False)
    assert got.summary["top_eigenvalue"] == pytest.approx(ref.summary["top_eigenvalue"],
                                                          rel=1e-4)
    tr = deepscope.hessian(g, (x, y), which="trace", probes=30, dtype=torch.float64,
                           seed=1, progress=False)
    tr_cpu = deepscope.hessian(m, (x, y), which="trace", probes=30, dtype=torch.float64,
                               seed=1, progress=False)
    assert tr.summary["trace"] == pytest.approx(tr_cpu.summary["trace"], rel=1e-6)


def test_hessian_output_layer_start_on_cuda(digits):
    """start='output-layer' on a CUDA model, and on a CPU model computed on CUDA."""
    m = _mlp(digits).eval()
    x, y = digits.split("train")
    ref = deepscope.hessian(m, (x, y), which="top", k=1, tol=1e-6, progress=False)
    g = copy.deepcopy(m).cuda()
    for model, device in ((g, None), (m, "cuda")):
        got = deepscope.hessian(model, (x, y), which="top", k=1, rtol=1e-3,
                                start="output-layer", device=device, progress=False)
        assert got.summary["start_hvps"] > 0
        assert got.summary["top_eigenvalue"] == pytest.approx(
            ref.summary["top_eigenvalue"], rel=2e-3)


def test_point_evaluator_on_cuda(digits):
    from deepscope.landscape.evaluate import PointEvaluator
    m = build_model({"arch": "resnet", "input_shape": list(digits.input_shape),
                     "num_outputs": 10}, seed=0)
    ref = PointEvaluator(m, digits)
    g = copy.deepcopy(m).cuda()
    ev = PointEvaluator(g, digits)
    theta = ev.vector(g) * 1.1
    a = ev.evaluate(theta)
    b = ref.evaluate(theta.cpu())
    n = {"train": 400, "test": 200}
    for k in a:  # cuDNN may use TF32 convolutions: losses to 1e-3, accuracy to 1 near-tie
        if k.endswith("_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-3)
        else:
            assert abs(a[k] - b[k]) <= 1.01 / n[k.split("_")[0]]


def test_cuda_hvp_equals_dense_hessian():
    torch.manual_seed(0)
    from deepscope.curvature import CurvatureOperator
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 3)).double().cuda()
    x = torch.randn(32, 5, dtype=torch.float64, device="cuda")
    y = torch.randint(0, 3, (32,), device="cuda")
    op = CurvatureOperator(model, x, y, F.cross_entropy, dtype=torch.float64)
    params = [p.detach().clone() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def loss_of(flat):
        ps, i = {}, 0
        for n, p in zip(names, params):
            ps[n] = flat[i:i + p.numel()].view_as(p)
            i += p.numel()
        return F.cross_entropy(torch.func.functional_call(model, ps, (x,)), y)

    flat = torch.cat([p.reshape(-1) for p in params])
    H = torch.autograd.functional.hessian(loss_of, flat)
    v = torch.randn(flat.numel(), dtype=torch.float64, device="cuda")
    assert torch.allclose(op.matvec(v), H @ v, atol=1e-10)


def test_new_probes_on_cuda_match_cpu(digits):
    """Every data-dependent probe gives the CPU's numbers for a model on the GPU (at the
    process's TF32 defaults: the probes run at IEEE float32, deepscope._precision)."""
    m = _mlp(digits).eval()
    g = copy.deepcopy(m).cuda()
    fp = state_fingerprint(g)
    checks = [
        (lambda mm: deepscope.ntk(mm, digits, max_samples=32).summary["lambda_max"], 1e-4),
        (lambda mm: float(deepscope.margins(mm, digits, progress=False)
                          .signature().iloc[0]), 1e-3),
        (lambda mm: deepscope.gdv(mm, digits, max_per_class=20, progress=False)
         .table["gdv"].iloc[-1], 1e-4),
        (lambda mm: float(deepscope.cka(mm, digits, max_samples=256, progress=False)
                          .table["cka"].iloc[1]), 1e-4),
        (lambda mm: deepscope.surface(mm, digits, dims=1, steps=5, max_samples=256,
                                      progress=False).table["loss"].iloc[0], 1e-4),
        (lambda mm: deepscope.interpolate(mm, _mlp(digits, 1).to(
            next(mm.parameters()).device), digits, steps=5, progress=False)
         .summary["barrier_train_loss"], 1e-4),
    ]
    for fn, rel in checks:  # abs: the barrier of two untrained nets is a float32 difference
        assert fn(g) == pytest.approx(fn(m), rel=rel, abs=1e-6)  # of ~2.3-sized losses
    assert state_fingerprint(g) == fp


def test_conv_net_probes_ignore_tf32_settings(digits):
    """A training script's TF32 settings (cuDNN convolutions and matmuls) do not reach the
    probes: a CNN's float32 Hessian eigenvalue and margins on the GPU match the CPU's."""
    from deepscope._precision import precision_flags
    before = precision_flags()
    prec = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    try:
        m = build_model({"arch": "cnn", "input_shape": list(digits.input_shape),
                         "num_outputs": digits.num_outputs, "channels": [16, 32],
                         "fc": [64, 32]}, seed=0).eval()
        g = copy.deepcopy(m).cuda()
        x, y = digits.split("train")
        kw = dict(which="top", k=1, tol=1e-6, progress=False)
        ref = deepscope.hessian(m, (x, y), **kw).summary["top_eigenvalue"]
        got = deepscope.hessian(g, (x, y), **kw).summary["top_eigenvalue"]
        assert got == pytest.approx(ref, rel=2e-5)
        sig_cpu = deepscope.margins(m, digits, progress=False).signature()
        sig_gpu = deepscope.margins(g, digits, progress=False).signature()
        assert sig_gpu.to_numpy() == pytest.approx(sig_cpu.to_numpy(), rel=1e-4, abs=1e-6)
        assert precision_flags()["cudnn.conv"] == "tf32"
    finally:
        torch.set_float32_matmul_precision(prec)
        for key, value in before.items():
            backend, op = key.split(".")
            getattr(getattr(torch.backends, backend), op).fp32_precision = value


def test_taylor_trace_on_cuda(digits):
    """The trace's Taylor quadratic forms run on the GPU and give the CPU's estimate."""
    m = _mlp(digits).eval()
    x, y = digits.split("train")
    kw = dict(which="trace", probes=20, dtype=torch.float64, seed=3, progress=False)
    cpu = deepscope.hessian(m, (x, y), **kw)
    gpu = deepscope.hessian(copy.deepcopy(m).cuda(), (x, y), **kw)
    assert gpu.summary["trace_quadratic_forms"] == "taylor"
    assert gpu.summary["trace"] == pytest.approx(cpu.summary["trace"], rel=1e-8)
