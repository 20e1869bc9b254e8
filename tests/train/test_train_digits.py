"""End to end on the real API: deepscope.data.load_dataset + deepscope.nets.build_model."""
import pytest
import torch

from deepscope.data import load_dataset
from deepscope.nets import build_model
from deepscope.train import RecordWeightNorms, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_mlp_reaches_95_percent_on_digits(digits):
    spec = {"arch": "mlp", "widths": [128]}
    res = train(spec, digits, optimizer="adam", lr=1e-3, epochs=12, batch_size=32,
                progress=False)
    assert res.metrics["test_acc"] >= 0.95, res.history[["epoch", "train_loss", "test_acc"]]
    assert res.model.deepscope_spec["input_shape"] == [64]
    assert res.model.deepscope_spec["num_outputs"] == 10
    # the arch spec is built with config.seed: its init is the recorded init_params
    init = build_model({**spec, "input_shape": [64], "num_outputs": 10}, seed=0)
    assert all(torch.equal(res.init_params[k], v) for k, v in init.named_parameters())


def test_dataset_by_name_and_dropout_mlp_deterministic():
    spec = {"arch": "mlp", "widths": [32], "dropout": 0.2, "batchnorm": True}
    kw = dict(epochs=1, lr=0.05, momentum=0.9, seed=3, progress=False,
              callbacks=[RecordWeightNorms()])
    a = train(spec, "digits", **kw)
    b = train(spec, "digits", **kw)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert "weight_norm/fc1.weight" in a.history.columns
