"""The module tree reflects the spec: layer order, flags, regular names, input mapping."""
import pytest
import torch
from torch import nn

from deepscope.nets import build_model


def build(arch, shape, k=3, **kw):
    return build_model({"arch": arch, "input_shape": list(shape), "num_outputs": k, **kw},
                       seed=0)


def names(seq):
    return [n for n, _ in seq.named_children()]


def count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


# ----------------------------------------------------------------------------------- mlp
def test_mlp_layer_order():
    m = build("mlp", (1, 8, 8), widths=[16, 8])
    assert names(m) == ["flatten", "fc1", "act1", "fc2", "act2", "out"]
    assert isinstance(m.flatten, nn.Flatten) and isinstance(m.act1, nn.ReLU)
    assert (m.fc1.in_features, m.fc1.out_features) == (64, 16)
    assert (m.out.in_features, m.out.out_features) == (8, 3)


def test_mlp_flags():
    m = build("mlp", (10,), widths=[16, 8], batchnorm=True, dropout=0.25, activation="tanh")
    assert names(m) == ["flatten", "fc1", "bn1", "act1", "drop1",
                        "fc2", "bn2", "act2", "drop2", "out"]
    assert isinstance(m.bn1, nn.BatchNorm1d) and m.bn1.num_features == 16
    assert isinstance(m.drop2, nn.Dropout) and m.drop2.p == 0.25
    assert count(m, nn.Tanh) == 2
    assert count(build("mlp", (10,), activation="gelu"), nn.GELU) == 2
    nb = build("mlp", (10,), widths=[4], bias=False)
    assert all(l.bias is None for l in nb.modules() if isinstance(l, nn.Linear))


def test_mlp_linear_model():
    m = build("mlp", (5,), widths=[])
    assert names(m) == ["flatten", "out"]
    assert m(torch.randn(2, 5)).shape == (2, 3)


# ----------------------------------------------------------------------------------- cnn
def test_cnn_layers_2d():
    m = build("cnn", (3, 32, 32), channels=[8, 16], fc=[12, 6])
    assert names(m.features) == ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]
    assert names(m.classifier) == ["flatten", "fc1", "act1", "fc2", "act2", "out"]
    assert isinstance(m.features.conv1, nn.Conv2d)
    assert m.features.conv1.kernel_size == (5, 5) and m.features.conv1.padding == (2, 2)
    assert m.classifier.fc1.in_features == 16 * 8 * 8  # 32 -> 16 -> 8
    assert m.classifier.fc2.out_features == 6 and m.classifier.out.out_features == 3


@pytest.mark.parametrize("shape,flat", [((1, 8, 8), 16 * 2 * 2), ((1, 40), 16 * 10),
                                        ((64,), 16 * 16), ((2, 1, 1), 16)])
def test_cnn_small_inputs(shape, flat):
    m = build("cnn", shape, channels=[8, 16], fc=[4, 4])
    assert m.classifier.fc1.in_features == flat
    conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
    assert isinstance(m.features.conv1, conv)
    assert m.features.conv1.in_channels == (1 if len(shape) == 1 else shape[0])
    assert m(torch.randn(2, *shape)).shape == (2, 3)


def test_cnn_flags():
    m = build("cnn", (1, 8, 8), channels=[4, 4], fc=[4, 4], batchnorm=True, dropout=0.5)
    assert names(m.features) == ["conv1", "act1", "pool1", "bn1",
                                 "conv2", "act2", "pool2", "bn2"]
    assert count(m, nn.BatchNorm2d) == 2 and count(m, nn.Dropout) == 2
    m1 = build("cnn", (1, 40), channels=[4, 4], fc=[4, 4], batchnorm=True)
    assert count(m1, nn.BatchNorm1d) == 2
    # the dry forward at build time must not touch BatchNorm statistics
    assert all(torch.all(b.running_mean == 0) and b.num_batches_tracked == 0
               for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert all(mod.training for mod in m.modules())


# -------------------------------------------------------------------------------- resnet
def test_resnet_names_and_shapes():
    m = build("resnet", (3, 32, 32), blocks=[2, 1, 1], width=4)
    params = dict(m.named_parameters())
    for name in ["stem.conv.weight", "stem.bn.weight", "stages.0.0.conv1.weight",
                 "stages.0.0.bn1.weight", "stages.0.1.conv2.weight",
                 "stages.1.0.shortcut.conv.weight", "stages.1.0.shortcut.bn.weight",
                 "stages.2.0.shortcut.conv.weight", "head.weight", "head.bias"]:
        assert name in params, name
    assert not any(n.startswith("stages.0.0.shortcut") for n in params)
    assert "stem.conv.bias" not in params  # BatchNorm replaces conv biases
    assert [s[0].conv2.out_channels for s in m.stages] == [4, 8, 16]
    assert m.stages[1][0].conv1.stride == (2, 2) and m.stages[0][0].conv1.stride == (1, 1)
    assert m.head.in_features == 16
    x = m.stem(torch.randn(2, 3, 32, 32))
    for stage in m.stages:
        x = stage(x)
    assert x.shape == (2, 16, 8, 8)


def test_resnet_without_batchnorm():
    m = build("resnet", (3, 8, 8), blocks=[1, 1], width=4, batchnorm=False)
    assert count(m, nn.modules.batchnorm._BatchNorm) == 0
    assert isinstance(m.stem.bn, nn.Identity) and isinstance(m.stages[1][0].shortcut.bn,
                                                                 nn.Identity)
    assert m.stem.conv.bias is not None
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(1, 40), (64,)])
def test_resnet_1d(shape):
    m = build("resnet", shape, blocks=[1, 1], width=4)
    assert isinstance(m.stem.conv, nn.Conv1d) and isinstance(m.stem.bn, nn.BatchNorm1d)
    assert m.stem.conv.in_channels == 1


# ---------------------------------------------------------------------------------- lstm
@pytest.mark.parametrize("shape,steps,features", [((40,), 40, 1), ((1, 40), 40, 1),
                                                  ((2, 40), 40, 2), ((3, 32, 32), 32, 96)])
def test_lstm_reads_channel_first_inputs_as_sequences(shape, steps, features):
    m = build("lstm", shape, hidden=4)
    assert m.lstm.input_size == features and m.lstm.batch_first
    x = torch.randn(2, *shape)
    seq = m.as_sequence(x)
    assert seq.shape == (2, steps, features)
    if len(shape) == 2:
        assert torch.equal(seq[:, 5, :], x[:, :, 5])
    if len(shape) == 3:
        assert torch.equal(seq[:, 5, 32:64], x[:, 1, 5, :])


def test_lstm_head_on_last_step():
    m = build("lstm", (2, 10), hidden=4, layers=2).eval()
    x = torch.randn(3, 2, 10)
    out, (h_n, _) = m.lstm(m.as_sequence(x))
    assert torch.allclose(m(x), m.head(h_n[-1]))
    assert torch.allclose(h_n[-1], out[:, -1])


def test_lstm_bidirectional_uses_final_state_of_each_direction():
    m = build("lstm", (2, 10), hidden=4, layers=2, bidirectional=True).eval()
    assert m.head.in_features == 8
    x = torch.randn(3, 2, 10)
    _, (h_n, _) = m.lstm(m.as_sequence(x))
    assert torch.allclose(m(x), m.head(torch.cat([h_n[-2], h_n[-1]], dim=-1)), atol=1e-6)


def test_lstm_dropout():
    m = build("lstm", (1, 10), hidden=4, layers=2, dropout=0.3)
    assert m.lstm.dropout == 0.3 and isinstance(m.drop, nn.Dropout) and m.drop.p == 0.3
    one = build("lstm", (1, 10), hidden=4, dropout=0.3)
    assert one.lstm.dropout == 0.0 and isinstance(one.drop, nn.Dropout)
    assert build("lstm", (1, 10), hidden=4).drop is None
    assert count(build("lstm", (1, 10), hidden=4), nn.Dropout) == 0
