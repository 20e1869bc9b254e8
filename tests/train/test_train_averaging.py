"""Polyak (equal-weight) and EMA iterate averaging, BatchNorm refresh of the average."""
import pytest
import torch

from deepscope.data import Dataset
from deepscope.train import LambdaCallback, evaluate, train
from train_helpers import linear, make_linreg


def record_iterates(store):
    return LambdaCallback(on_step_end=lambda s: store.append(
        {k: v.detach().clone() for k, v in s.model.named_parameters()}))


def test_polyak_is_mean_of_iterates(linreg):
    iterates = []
    res = train(linear(dtype=torch.float64), linreg, epochs=3, lr=0.05, averaging="polyak",
                callbacks=[record_iterates(iterates)], progress=False)
    assert len(iterates) == res.metrics["steps"] == 12
    for name, p in res.model.named_parameters():
        mean = torch.stack([it[name] for it in iterates]).mean(0)
        torch.testing.assert_close(p.detach(), mean, rtol=0, atol=1e-12)
    # the history follows the optimized iterate, metrics describe the averaged model
    assert res.metrics["iterate_train_loss"] == res.history["train_loss"].iloc[-1]
    assert res.metrics["train_loss"] == pytest.approx(
        evaluate(res.model, linreg, split="train")["loss"], rel=1e-9)


def test_ema_formula(linreg):
    iterates, d = [], 0.8
    res = train(linear(dtype=torch.float64), linreg, epochs=2, lr=0.05, averaging="ema",
                ema_decay=d, callbacks=[record_iterates(iterates)], progress=False)
    for name, p in res.model.named_parameters():
        e = iterates[0][name]
        for it in iterates[1:]:
            e = d * e + (1 - d) * it[name]
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
        assert not torch.allclose(p.detach(), iterates[-1][name])


def test_averaged_batchnorm_stats_refreshed():
    ds = make_linreg(n_train=128, n_test=32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16),
                                torch.nn.ReLU(), torch.nn.Linear(16, 1))
    res = train(model, ds, epochs=3, lr=0.05, batch_size=32, averaging="polyak",
                progress=False)
    avg = res.model
    assert isinstance(avg, torch.nn.Sequential) and not avg.training
    with torch.no_grad():
        pre_bn = avg[0](ds.x_train)  # the averaged weights' BatchNorm input
    torch.testing.assert_close(avg[1].running_mean, pre_bn.mean(0), rtol=1e-5, atol=1e-5)
    assert avg[1].momentum == model[1].momentum  # restored


def test_averaging_deterministic(linreg):
    a = train(linear(), linreg, epochs=2, averaging="ema", ema_decay=0.9, progress=False)
    b = train(linear(), linreg, epochs=2, averaging="ema", ema_decay=0.9, progress=False)
    assert torch.equal(a.model.weight, b.model.weight)


def test_zero_epochs_returns_initial_model():
    ds = Dataset(torch.randn(10, 8), torch.randn(10, 1), torch.randn(4, 8), torch.randn(4, 1),
                 "regression", None)
    m = linear()
    res = train(m, ds, epochs=0, averaging="polyak", progress=False)
    assert torch.equal(res.model.weight, m.weight) and len(res.history) == 1
