"""Learning-rate schedules: stepped once per optimizer step, time axis in epochs."""
import math

import pytest
import torch

from deepscope.train import LambdaCallback, TrainConfig, lr_at, lr_factor_fn, make_scheduler, train
from train_helpers import linear, make_linreg

N, BS = 64, 16
SPE = N // BS  # 4 steps per epoch


def run(**cfg):
    cfg.setdefault("batch_size", BS)
    lrs = []
    cb = LambdaCallback(on_step_end=lambda s: lrs.append(s.lr))
    ds = make_linreg(n_train=N, n_test=16)
    res = train(linear(), ds, progress=False, callbacks=[cb], **cfg)
    return res, lrs


def test_constant_builds_no_scheduler():
    opt = torch.optim.SGD(linear().parameters(), lr=0.1)
    assert make_scheduler(opt, TrainConfig(), SPE) is None
    res, lrs = run(lr=0.05, epochs=3)
    assert lrs == [0.05] * 3 * SPE
    assert res.history["lr"].tolist() == [0.05] * 4


def test_step_schedule_history_and_steps():
    res, lrs = run(lr=0.08, epochs=6, schedule="step", step_size=2, gamma=0.5)
    expected_steps = [0.08 * 0.5 ** (s // (2 * SPE)) for s in range(6 * SPE)]
    assert lrs == pytest.approx(expected_steps, rel=1e-12)
    # history lr = the lr used by each epoch's last step (epoch 0: the first step's)
    assert res.history["lr"].tolist() == pytest.approx(
        [0.08, 0.08, 0.08, 0.04, 0.04, 0.02, 0.02], rel=1e-12)


def test_cosine_schedule():
    res, lrs = run(lr=0.1, epochs=5, schedule="cosine")
    total = 5 * SPE
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.002
    hist = res.history.set_index("epoch")["lr"]
    for e in range(1, 6):
        assert hist[e] == pytest.approx(expected[e * SPE - 1], rel=1e-9)


def test_linear_warmup_then_constant():
    _, lrs = run(lr=0.2, epochs=4, warmup_epochs=2)
    w = 2 * SPE
    assert lrs[:w] == pytest.approx([0.2 * (s + 1) / w for s in range(w)], rel=1e-12)
    assert lrs[w:] == pytest.approx([0.2] * (4 * SPE - w), rel=1e-12)
    steps = torch.tensor(lrs[:w])
    assert torch.allclose(steps[1:] - steps[:-1], torch.full((w - 1,), 0.2 / w, dtype=steps.dtype))


def test_fractional_warmup_composes_with_cosine():
    _, lrs = run(lr=0.1, epochs=4, warmup_epochs=0.5, schedule="cosine")
    w, total = SPE // 2, 4 * SPE
    expected = [0.1 * (s + 1) / w for s in range(w)] + [
        0.1 * 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w))) for s in range(w, total)]
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_warmup_composes_with_step_at_absolute_epochs():
    cfg = TrainConfig(lr=1.0, epochs=4, warmup_epochs=1, schedule="step", step_size=2,
                      gamma=0.1, batch_size=BS)
    f = lr_factor_fn(cfg, SPE)
    assert [f(s) for s in range(SPE)] == pytest.approx([(s + 1) / SPE for s in range(SPE)])
    assert f(2 * SPE - 1) == 1.0 and f(2 * SPE) == pytest.approx(0.1)
    _, lrs = run(**cfg.to_dict())
    assert lrs == pytest.approx([lr_at(cfg, s, SPE) for s in range(4 * SPE)], rel=1e-12)


def test_explicit_function_matches_torch_lambdalr():
    cfg = TrainConfig(lr=0.3, epochs=3, schedule="cosine", warmup_epochs=1)
    opt = torch.optim.SGD(linear().parameters(), lr=cfg.lr)
    sched = make_scheduler(opt, cfg, SPE)
    seen = []
    for _ in range(3 * SPE):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(cfg, s, SPE) for s in range(3 * SPE)], rel=1e-12)
