"""The batch-size study reproduces the published direction on a small budget."""
import pytest

from deepscope.errors import ConfigError
from deepscope.experiments import batch_size_spec, batch_size_study
from deepscope.experiments.batch_size import plot_batch_size_study


def test_spec_shape():
    spec = batch_size_spec(batch_sizes=(512, 2, 32), seeds=(0, 1))
    assert spec["grid"]["train.batch_size"] == [2, 32, 512]
    assert spec["seeds"] == [0, 1]
    assert spec["base"]["arch"]["arch"] == "cnn"
    with pytest.raises(ConfigError):
        batch_size_spec(batch_sizes=())
    with pytest.raises(ConfigError):
        batch_size_spec(arch="transformer")


def test_small_batches_push_spectra_out_of_the_bulk(tmp_path):
    res = batch_size_study(tmp_path / "zoo", batch_sizes=(4, 256), seeds=(0,), epochs=3,
                           progress=False)
    t = res.table.set_index("batch_size")
    assert list(t.index) == [4, 256]
    # Martin & Mahoney: more eigenvalues outside the MP bulk, lower soft rank, smaller alpha
    assert t.at[4, "fc1_outside_bulk"] > t.at[256, "fc1_outside_bulk"]
    assert t.at[4, "fc1_mp_softrank"] < t.at[256, "fc1_mp_softrank"]
    assert t.at[4, "fc1_alpha"] < t.at[256, "fc1_alpha"]
    assert res.summary["runs"] == 2 and res.summary["failed"] == 0
    # resumable: a second call trains nothing
    again = batch_size_study(tmp_path / "zoo", batch_sizes=(4, 256), seeds=(0,), epochs=3,
                             progress=False)
    assert again.summary["trained_now"] == 0
    assert again.table["fc1_alpha"].tolist() == res.table["fc1_alpha"].tolist()
    fig = plot_batch_size_study(res)
    assert len(fig.axes) == 4
