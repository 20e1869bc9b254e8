"""Callbacks: hooks, logged columns, stopping, built-ins."""
import math

import numpy as np
import pytest
import torch

from deepscope.errors import ConfigError
from deepscope.train import Callback, LambdaCallback, RecordWeightNorms, TrainState, train
from train_helpers import linear, make_linreg, small_mlp


class Counter(Callback):
    def __init__(self):
        self.calls = {}
        self.batch_losses = []

    def _hit(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def on_train_begin(self, state):
        self._hit("train_begin")
        assert state.epoch == 0 and state.step == 0 and len(state.history) == 0
        assert isinstance(state, TrainState) and state.optimizer is not None

    def on_epoch_begin(self, state):
        self._hit("epoch_begin")
        assert len(state.history) == state.epoch  # rows 0..epoch-1 so far

    def on_step_end(self, state):
        self._hit("step_end")
        self.batch_losses.append(state.batch_loss)

    def on_epoch_end(self, state):
        self._hit("epoch_end")
        assert state.row["epoch"] == state.epoch
        assert not math.isnan(state.row["train_loss"])  # evaluated before on_epoch_end

    def on_train_end(self, state):
        self._hit("train_end")


def test_hooks_called_in_order_and_counts(linreg):
    c = Counter()
    res = train(linear(), linreg, epochs=3, lr=0.05, batch_size=32, callbacks=[c],
                progress=False)
    assert c.calls == {"train_begin": 1, "epoch_begin": 3, "step_end": 12, "epoch_end": 3,
                       "train_end": 1}
    assert all(isinstance(v, float) and math.isfinite(v) for v in c.batch_losses)
    assert res.metrics["steps"] == 12


def test_logged_columns_appear_in_history(linreg):
    cb = LambdaCallback(
        on_train_begin=lambda s: s.log("marker", -1),
        on_epoch_end=lambda s: (s.log("double_epoch", 2 * s.epoch),
                                s.log("gap", s.row["test_loss"] - s.row["train_loss"]),
                                s.log("as_tensor", torch.tensor(1.5)),
                                s.log("as_numpy", np.float32(0.25))))
    res = train(linear(), linreg, epochs=3, lr=0.05, callbacks=[cb], progress=False)
    h = res.history
    assert h["double_epoch"].tolist()[1:] == [2, 4, 6] and math.isnan(h["double_epoch"][0])
    assert h["marker"][0] == -1
    assert np.allclose(h["gap"][1:], (h["test_loss"] - h["train_loss"])[1:])
    assert h["as_tensor"][3] == 1.5 and h["as_numpy"][3] == 0.25
    assert res.metrics["double_epoch"] == 6


def test_logging_on_non_evaluated_epochs_adds_rows(linreg):
    cb = LambdaCallback(on_epoch_end=lambda s: s.log("e", s.epoch))
    res = train(linear(), linreg, epochs=4, lr=0.05, eval_every=2, callbacks=[cb],
                progress=False)
    h = res.history.set_index("epoch")
    assert h.index.tolist() == [0, 1, 2, 3, 4]
    assert math.isnan(h.loc[1, "train_loss"]) and not math.isnan(h.loc[2, "train_loss"])
    assert h.loc[3, "e"] == 3


def test_log_rejects_reserved_and_non_scalar(linreg):
    with pytest.raises(ConfigError, match="reserved"):
        train(linear(), linreg, epochs=1, progress=False,
              callbacks=[LambdaCallback(on_epoch_end=lambda s: s.log("train_loss", 0))])
    with pytest.raises(ConfigError, match="expected a scalar"):
        train(linear(), linreg, epochs=1, progress=False,
              callbacks=[LambdaCallback(on_epoch_end=lambda s: s.log("w", torch.ones(3)))])


def test_callback_stop_from_step_with_reason(linreg):
    def stop_at_5(s):
        if s.step == 5:
            s.request_stop("enough steps")

    res = train(linear(), linreg, epochs=10, lr=0.05, callbacks=[LambdaCallback(
        on_step_end=stop_at_5)], progress=False)
    assert res.metrics["steps"] == 5 and res.metrics["epochs_run"] == 2
    assert res.metrics["stopped_early"] is True and res.metrics["stop_reason"] == "enough steps"
    assert not math.isnan(res.history["train_loss"].iloc[-1])


def test_callback_stop_flag_from_epoch_end(linreg):
    def stop(s):
        if s.epoch == 2:
            s.stop = True

    res = train(linear(), linreg, epochs=10, lr=0.05, eval_every=5,
                callbacks=[LambdaCallback(on_epoch_end=stop)], progress=False)
    assert res.metrics["epochs_run"] == 2
    assert res.metrics["stop_reason"] == "stopped by a callback"
    assert not math.isnan(res.metrics["train_loss"])  # the stopping epoch is evaluated


def test_record_weight_norms(logreg):
    model = small_mlp()
    res = train(model, logreg, epochs=4, lr=0.1, callbacks=[RecordWeightNorms(every=2)],
                progress=False)
    h = res.history.set_index("epoch")
    cols = [c for c in h.columns if c.startswith("weight_norm/")]
    assert cols == ["weight_norm/0.weight", "weight_norm/2.weight"]  # matrices only
    assert h.loc[0, "weight_norm/0.weight"] == pytest.approx(
        float(res.init_params["0.weight"].double().norm()))
    assert math.isnan(h.loc[1, "weight_norm/0.weight"]) and math.isnan(h.loc[3, cols[1]])
    assert h.loc[4, "weight_norm/2.weight"] == pytest.approx(
        float(res.model[2].weight.detach().double().norm()))
    res2 = train(model, logreg, epochs=1, progress=False,
                 callbacks=[RecordWeightNorms(include_vectors=True, prefix="n:")])
    assert "n:0.bias" in res2.history.columns


def test_callback_argument_validation():
    with pytest.raises(ConfigError, match="every must be an integer >= 1"):
        RecordWeightNorms(every=0)
    with pytest.raises(ConfigError, match="expected a callable"):
        LambdaCallback(on_epoch_end=3)
    ds = make_linreg()
    res = train(linear(), ds, epochs=1, callbacks=Counter(), progress=False)  # single callback
    assert res.metrics["epochs_run"] == 1


def test_stop_requested_before_training(linreg):
    res = train(linear(), linreg, epochs=5, progress=False,
                callbacks=[LambdaCallback(on_train_begin=lambda s: s.request_stop("dry run"))])
    assert res.metrics["steps"] == 0 and res.metrics["epochs_run"] == 0
    assert res.metrics["stop_reason"] == "dry run" and len(res.history) == 1
