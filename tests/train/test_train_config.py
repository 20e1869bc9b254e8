import json

import pytest
import torch

from deepscope.errors import ConfigError
from deepscope.train import TrainConfig, train


def test_defaults():
    c = TrainConfig()
    assert (c.optimizer, c.lr, c.momentum, c.nesterov, c.batch_size, c.epochs) == \
        ("sgd", 0.1, 0.0, False, 32, 20)
    assert (c.schedule, c.averaging, c.loss, c.seed, c.device, c.eval_every) == \
        ("constant", "none", None, 0, "cpu", 1)
    assert c.target_loss is None and c.clip_grad_norm is None and c.drop_last is False


def test_json_round_trip():
    c = TrainConfig(optimizer="adam", lr=1e-3, betas=(0.8, 0.99), schedule="cosine",
                    warmup_epochs=2, averaging="ema", ema_decay=0.99, clip_grad_norm=1.0,
                    target_loss=0.01, loss="mse", seed=3)
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c
    assert d["betas"] == [0.8, 0.99]


def test_from_dict_partial_uses_defaults():
    assert TrainConfig.from_dict({"lr": 0.5}) == TrainConfig(lr=0.5)


def test_unknown_key_named():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match=r"unknown optimizer 'sgdd': expected one of adagrad"):
        TrainConfig(optimizer="sgdd")


@pytest.mark.parametrize("key,value", [("schedule", "linear"), ("averaging", "swa"),
                                       ("loss", "hinge")])
def test_unknown_names(key, value):
    with pytest.raises(ConfigError, match=f"unknown {key} '{value}'"):
        TrainConfig.from_dict({key: value})


@pytest.mark.parametrize("key,value,pattern", [
    ("lr", "0.1", "lr must be a number"),
    ("lr", -1.0, "lr must be >= 0"),
    ("lr", float("nan"), "lr must be finite"),
    ("batch_size", 0, "batch_size must be >= 1"),
    ("batch_size", 3.0, "batch_size must be an integer"),
    ("epochs", True, "epochs must be an integer"),
    ("momentum", 1.0, "momentum must be >= 0 and < 1"),
    ("gamma", 0.0, "gamma must be > 0"),
    ("ema_decay", 1.0, "ema_decay must be"),
    ("clip_grad_norm", 0.0, "clip_grad_norm must be > 0"),
    ("target_loss", "low", "target_loss must be a number or None"),
    ("betas", (0.9,), "betas must be a pair"),
    ("nesterov", 1, "nesterov must be True or False"),
    ("device", "gpu0", "device must be a torch device"),
    ("seed", -1, "seed must be >= 0"),
])
def test_bad_values(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig.from_dict({key: value})


def test_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match="nesterov=True needs momentum > 0"):
        TrainConfig(nesterov=True)
    TrainConfig(nesterov=True, momentum=0.9)


def test_options_of_other_optimizers_rejected():
    with pytest.raises(ConfigError, match="momentum applies to"):
        TrainConfig(optimizer="adam", momentum=0.9)
    with pytest.raises(ConfigError, match="betas apply to"):
        TrainConfig(optimizer="sgd", betas=(0.5, 0.5))
    with pytest.raises(ConfigError, match="eps applies to"):
        TrainConfig(optimizer="sgd", eps=1e-6)


def test_replace_validates():
    c = TrainConfig().replace(lr=0.3)
    assert c.lr == 0.3
    with pytest.raises(ConfigError, match="lrr"):
        TrainConfig().replace(lrr=0.3)


def test_train_overrides_unknown_key(linreg):
    with pytest.raises(ConfigError, match="lrate"):
        train(torch.nn.Linear(8, 1), linreg, lrate=0.1)


def test_train_rejects_bad_arguments(linreg):
    import torch
    with pytest.raises(ConfigError, match="model must be an nn.Module"):
        train("mlp", linreg, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="dataset must be"):
        train(torch.nn.Linear(8, 1), (linreg.x_train, linreg.y_train), epochs=1,
              progress=False)
    with pytest.raises(ConfigError, match="cross_entropy' needs integer class labels"):
        train(torch.nn.Linear(8, 1), linreg, loss="cross_entropy", epochs=1, progress=False)
    with pytest.raises(ConfigError, match="callbacks must be Callback instances"):
        train(torch.nn.Linear(8, 1), linreg, callbacks=[print], epochs=1, progress=False)


def test_numpy_scalars_accepted_and_normalized():
    import numpy as np
    c = TrainConfig(lr=np.float32(0.5), batch_size=np.int64(16), shuffle=np.bool_(False))
    assert type(c.lr) is float and type(c.batch_size) is int and c.shuffle is False
    import json
    json.dumps(c.to_dict())
