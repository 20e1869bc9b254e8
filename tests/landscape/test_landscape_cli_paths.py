"""`deepscope interpolate` / `deepscope align` end to end, the figures and the demo section."""
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

import deepscope
from deepscope.cli import main
from deepscope.landscape.align import align
from deepscope.landscape.interpolate import interpolate

DATA = {"name": "digits", "n_train": 200, "n_test": 100}


def _train(path, widths, seed):
    deepscope.train_and_save({"arch": "mlp", "widths": widths}, DATA,
                             {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 3,
                              "batch_size": 32, "seed": seed}, path, progress=False)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    return (_train(d / "a.safetensors", [16], 0), _train(d / "b.safetensors", [16], 1),
            _train(d / "c.safetensors", [12], 2))


def _one_line_error(capsys):
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_interpolate_table(ckpts, capsys):
    a, b, _ = ckpts
    assert main(["interpolate", str(a), str(b), "--steps", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    ref = interpolate(a, b, steps=5, progress=False)
    assert "train_loss_linear" in out and "barrier_train_loss:" in out
    line = next(l for l in out.splitlines() if l.startswith("barrier_train_loss:"))
    assert float(line.split(":")[1]) == pytest.approx(ref.summary["barrier_train_loss"],
                                                      rel=1e-5)


def test_interpolate_align_json_and_out(ckpts, capsys, tmp_path):
    a, b, _ = ckpts
    code = main(["interpolate", str(a), str(b), "--steps", "6", "--align", "--format", "json",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"interpolation", "aligned", "align"}
    assert len(doc["interpolation"]["table"]) == 6 and len(doc["aligned"]["table"]) == 6
    ck_a, ck_b = deepscope.load(a), deepscope.load(b)
    al = align(ck_a.model, ck_b.model)
    ref = interpolate(ck_a.model, al.model, ck_a.dataset(), steps=6, progress=False)
    assert doc["aligned"]["summary"]["barrier_train_loss"] == pytest.approx(
        ref.summary["barrier_train_loss"], rel=1e-5)
    assert doc["align"]["summary"]["rounds"] == al.summary["rounds"]
    for name in ("interpolation.csv", "interpolation.json", "interpolation_aligned.csv",
                 "interpolation_aligned.json", "align.json", "interpolation.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "interpolation.png").read_bytes()[:4] == b"\x89PNG"
    back = pd.read_csv(tmp_path / "interpolation.csv")
    assert len(back) == 6 and "test_error" in back


def test_interpolate_csv_and_bn_keep(ckpts, capsys):
    a, b, _ = ckpts
    assert main(["interpolate", str(a), str(b), "--steps", "3", "--align", "--bn", "keep",
                 "--max-samples", "50", "--format", "csv", "--quiet"]) == 0
    from io import StringIO
    df = pd.read_csv(StringIO(capsys.readouterr().out))
    assert list(df["curve"]) == ["raw"] * 3 + ["aligned"] * 3
    assert df.columns[1] == "t"
    # same end points: aligning b does not change its function
    assert df["train_loss"].iloc[2] == pytest.approx(df["train_loss"].iloc[5], rel=1e-5)


def test_align_writes_a_checkpoint_other_commands_accept(ckpts, capsys, tmp_path):
    a, b, _ = ckpts
    out = tmp_path / "b_aligned.safetensors"
    assert main(["align", str(a), str(b), "-o", str(out), "--steps", "5", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "fraction_moved:" in text
    line = next(l for l in text.splitlines() if l.startswith("barrier_train_loss:"))
    before, after = (float(v) for v in line.split(":")[1].split("->"))
    ck_a, ck_b = deepscope.load(a), deepscope.load(b)
    raw = interpolate(ck_a.model, ck_b.model, ck_a.dataset(), steps=5, progress=False)
    assert before == pytest.approx(raw.summary["barrier_train_loss"], rel=1e-5)
    assert after < before
    ck = deepscope.load(out)
    assert ck.arch == ck_b.arch and ck.dataset_spec == ck_b.dataset_spec
    assert ck.train_config == ck_b.train_config and ck.seed == ck_b.seed
    assert ck.metrics == ck_b.metrics
    x = torch.randn(9, 64)
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x), ck_b.model(x), atol=1e-5, rtol=1e-5)
    # initial weights permuted alike: the distance travelled from init is unchanged
    def travelled(c):
        return sum(((p.detach() - c.init_params[n]) ** 2).sum().item()
                   for n, p in c.model.named_parameters())
    assert travelled(ck) == pytest.approx(travelled(ck_b), rel=1e-6)
    assert not torch.equal(ck.model.fc1.weight, ck_b.model.fc1.weight)
    assert main(["info", str(out)]) == 0
    assert "mlp" in capsys.readouterr().out
    assert main(["interpolate", str(a), str(out), "--steps", "3", "--quiet"]) == 0
    capsys.readouterr()


def test_align_json(ckpts, capsys, tmp_path):
    a, b, _ = ckpts
    out = tmp_path / "x.safetensors"
    assert main(["align", str(a), str(b), "-o", str(out), "--no-barrier", "--format", "json",
                 "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["barriers"] == {} and doc["align"]["summary"]["converged"] is True


@pytest.mark.parametrize("cmd", ["interpolate", "align"])
def test_mismatched_architectures_exit_2(ckpts, capsys, tmp_path, cmd):
    a, _, c = ckpts
    extra = ["-o", str(tmp_path / "o.safetensors")] if cmd == "align" else []
    assert main([cmd, str(a), str(c), *extra, "--quiet"]) == 2
    assert "different architectures" in _one_line_error(capsys)
    assert not (tmp_path / "o.safetensors").exists()


def test_bad_steps_and_missing_file_exit_2(ckpts, capsys, tmp_path):
    a, b, _ = ckpts
    assert main(["interpolate", str(a), str(b), "--steps", "1", "--quiet"]) == 2
    assert "steps" in _one_line_error(capsys)
    assert main(["interpolate", str(a), str(tmp_path / "nope.safetensors"), "--quiet"]) == 2
    assert "nope.safetensors" in _one_line_error(capsys)
    # align refuses a bad --steps before writing its output
    out = tmp_path / "aligned.safetensors"
    assert main(["align", str(a), str(b), "-o", str(out), "--steps", "1", "--quiet"]) == 2
    assert "steps" in _one_line_error(capsys) and not out.exists()


# ------------------------------------------------------------------ report

def test_plot_interpolation_reads_the_results(ckpts):
    from deepscope.report.landscape_paths import plot_interpolation
    a, b, _ = ckpts
    raw = interpolate(a, b, steps=4, progress=False)
    fig = plot_interpolation(raw)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "error"]
    # train and test curves plus their linear references
    assert len(axes[0].lines) == 4
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), raw.curve("train", "loss"))
    np.testing.assert_allclose(axes[1].lines[1].get_ydata(), raw.curve("train", "error_linear"))
    fig2 = plot_interpolation(raw, raw)
    assert len(fig2.get_axes()[0].lines) == 6


def test_interpolation_section(tmp_path):
    """The demo section on a short run of the demo's own model and data."""
    from deepscope.demo import DEMO_ARCH, DEMO_DATA, DemoContext
    from deepscope.report.landscape_paths import interpolation_section
    from deepscope.result import Result
    train = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32,
             "epochs": 1, "seed": 0}
    run = deepscope.train_and_save(DEMO_ARCH, dict(DEMO_DATA, seed=0), train,
                                   tmp_path / "model.safetensors", progress=False)
    ctx = DemoContext(out=tmp_path, checkpoint=tmp_path / "model.safetensors",
                      model=run.model, dataset=run.dataset,
                      train_result=Result("train", run.history, summary=dict(run.metrics),
                                          settings=train),
                      progress=False, seed=0)
    t0 = time.perf_counter()
    sec = interpolation_section(ctx)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60  # ~3 s alone on 2 cores; generous for a loaded machine
    assert sec.title == "Linear interpolation and alignment" and len(sec.figures) == 1
    ck_b = deepscope.load(tmp_path / "model_b.safetensors")
    assert ck_b.seed == 1 and ck_b.train_config["epochs"] == 1
    raw = interpolate(run.model, ck_b.model, run.dataset, steps=21, progress=False)
    al = align(run.model, ck_b.model)
    aligned = interpolate(run.model, al.model, run.dataset, steps=21, progress=False)
    assert sec.summary["barrier_train_loss (raw)"] == pytest.approx(
        raw.summary["barrier_train_loss"], rel=1e-6)
    assert sec.summary["barrier_test_error (aligned)"] == pytest.approx(
        aligned.summary["barrier_test_error"], abs=1e-12)
    caption, table = sec.tables[0]
    assert len(table) == 21 and "train_loss (aligned)" in table
