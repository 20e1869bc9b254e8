"""The gdv-depth experiment: spec, a tiny run through the sweep engine, resumability, and the
numbers equal a direct GDV of each trained checkpoint."""
import pytest

from deepscope.errors import ConfigError
from deepscope.experiments.gdv_depth import gdv_depth_spec, gdv_depth_study, nets_table
from deepscope.representations.gdv import gdv
from deepscope.sweep import registered_probes
from deepscope.train.checkpoint import load_checkpoint

TINY = dict(depths=(1, 3), width=16, seeds=(0,), dataset="gaussian-mixture", n_train=240,
            data_options={"dim": 6, "num_classes": 3, "separation": 2.0}, epochs=2,
            batch_size=32, max_per_class=40, progress=False)


def test_spec():
    spec = gdv_depth_spec(depths=(4, 1, 2), width=8)
    assert spec["grid"]["arch.widths"] == [[8], [8, 8], [8, 8, 8, 8]]
    assert spec["base"]["data"] == {"name": "digits", "flat": True}
    cnn = gdv_depth_spec(arch="cnn", cnn_width=0.1)
    assert cnn["base"]["arch"]["arch"] == "cnn" and cnn["base"]["data"]["flat"] is False
    with pytest.raises(ConfigError):
        gdv_depth_spec(depths=())
    with pytest.raises(ConfigError):
        gdv_depth_spec(depths=(0, 2))
    with pytest.raises(ConfigError):
        gdv_depth_spec(dataset="cifar10")
    with pytest.raises(ConfigError):
        gdv_depth_spec(arch="cnn", dataset="gaussian-mixture")
    with pytest.raises(ConfigError):
        gdv_depth_spec(arch="transformer")
    assert "gdv" in registered_probes()


def test_tiny_study(tmp_path):
    res = gdv_depth_study(tmp_path / "zoo", **TINY)
    t = res.table
    assert res.summary["runs"] == 2 and res.summary["failed"] == 0
    assert res.summary["trained_now"] == 2
    assert t[t["depth"] == 1]["layer"].tolist() == ["input", "act1", "out"]
    assert t[t["depth"] == 3]["layer"].tolist() == ["input", "act1", "act2", "act3", "out"]
    # the stored numbers are the GDV of each trained checkpoint, recomputed directly
    for run_id, g in t.groupby("run_id"):
        ck = load_checkpoint(tmp_path / "zoo" / "runs" / f"{run_id}.safetensors")
        direct = gdv(ck.model, ck.dataset(), max_per_class=40, progress=False)
        assert g["gdv"].tolist() == pytest.approx(direct.table["gdv"].tolist(), abs=1e-12)
    nets = nets_table(res).set_index("net")
    assert list(nets.index) == ["mlp-1", "mlp-3"]
    for net, g in t.groupby("net"):
        assert nets.at[net, "best_gdv"] == pytest.approx(g["gdv"].min())
        assert nets.at[net, "best_layer"] == g.loc[g["gdv"].idxmin(), "layer"]
        assert nets.at[net, "output_gdv"] == pytest.approx(g["gdv"].iloc[-1])
    by_depth = res.summary["output_gdv_by_depth"]
    assert set(by_depth) == {"1", "3"}
    best = min(by_depth, key=by_depth.get)
    assert res.summary["best_depth"] == int(best)
    assert res.summary["best_output_gdv"] == pytest.approx(by_depth[best])
    # resumable: nothing is trained or measured again, same numbers
    again = gdv_depth_study(tmp_path / "zoo", **TINY)
    assert again.summary["trained_now"] == 0
    assert again.table["gdv"].tolist() == t["gdv"].tolist()
    from deepscope.report.representations import plot_gdv_depth
    assert len(plot_gdv_depth(res).axes) == 2
