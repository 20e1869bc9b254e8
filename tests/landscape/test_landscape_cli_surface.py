"""`deepscope surface` end to end through deepscope.cli.main, the figures and the demo section."""
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepscope.cli import main
from deepscope.landscape.result_surface import SurfaceResult

TRAIN = {"optimizer": "sgd", "lr": 0.1, "batch_size": 50, "seed": 0}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Weights after epochs 1, 2, 3 (bare safetensors files, written by a callback) and the
    final checkpoint after epoch 4 (the center), all from one small run."""
    from safetensors.torch import save_file

    from deepscope.train.callbacks import LambdaCallback
    from deepscope.workflows import train_and_save
    root = tmp_path_factory.mktemp("surf")
    paths = []

    def save(state):
        if len(paths) < 3:
            p = root / f"e{len(paths) + 1}.safetensors"
            save_file({k: v.detach().clone().contiguous()
                       for k, v in state.model.state_dict().items()}, str(p))
            paths.append(p)

    final = root / "final.safetensors"
    train_and_save({"arch": "mlp", "widths": [8]}, {"name": "digits", "n_train": 200},
                   {**TRAIN, "epochs": 4}, final, progress=False,
                   callbacks=[LambdaCallback(on_epoch_end=save)])
    return [*paths, final]


def test_table_output_2d(ckpts, capsys):
    assert main(["surface", str(ckpts[-1]), "--steps", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "center_loss:" in out and "evaluation:" in out
    header = out.splitlines()[0].split()
    assert header == ["i", "j", "a", "b", "loss", "accuracy"]


def test_json_csv_and_out_dir(ckpts, capsys, tmp_path):
    from deepscope import load
    ck = load(ckpts[-1])
    x, y = ck.dataset().split("train")
    assert main(["surface", str(ckpts[-1]), "--dims", "1", "--steps", "5", "--span", "0.5",
                 "--format", "json", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "surface" and len(data["table"]) == 5
    assert [r["a"] for r in data["table"]] == [-0.5, -0.25, 0.0, 0.25, 0.5]
    with torch.no_grad():
        ref = float(torch.nn.functional.cross_entropy(ck.model(x), y))
    assert data["summary"]["center_loss"] == pytest.approx(ref, rel=1e-5)
    for f in ("surface.csv", "surface.json", "directions.safetensors", "line.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    back = SurfaceResult.load(tmp_path)
    np.testing.assert_allclose(back.table["loss"], [r["loss"] for r in data["table"]])
    assert len(back.directions) == 1
    assert main(["surface", str(ckpts[-1]), "--steps", "2,3", "--span=-1:1,0:2",
                 "--format", "csv", "--quiet", "--max-samples", "50"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(table) == 6 and sorted(set(table["b"])) == [0.0, 1.0, 2.0]


def test_pca_trajectory_figures(ckpts, tmp_path, capsys):
    out = tmp_path / "pca"
    assert main(["surface", str(ckpts[-1]), "--directions", "pca-trajectory", "--trajectory",
                 *map(str, ckpts[:-1]), "--steps", "3", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "explained_variance_ratio:" in text
    for f in ("contour.png", "surface3d.png", "trajectory.png", "surface.json"):
        assert (out / f).stat().st_size > 0, f
    res = SurfaceResult.load(out)
    assert res.trajectory_coords.shape == (3, 2)


def test_resume_through_cli(ckpts, tmp_path, capsys):
    path = tmp_path / "r.json"
    args = ["surface", str(ckpts[-1]), "--steps", "3", "--resume", str(path), "--quiet",
            "--format", "json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["summary"]["points_resumed"] == 9 and second["summary"]["points_computed"] == 0
    assert second["table"] == first["table"]
    assert main(["surface", str(ckpts[-1]), "--steps", "4", "--resume", str(path),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different settings" in err[0] and "steps" in err[0]


@pytest.mark.parametrize("argv, needle", [
    (["--directions", "pca-trajectory"], "needs --trajectory"),
    (["--trajectory", "x.safetensors"], "only used with"),
    (["--steps", "1"], "--steps"),
    (["--span", "0"], "span"),
    (["--span", "abc"], "--span"),
    (["--dims", "1", "--steps", "3,3"], "--dims 2"),
    (["--split", "validation"], "split"),
])
def test_bad_input_exit_2(ckpts, capsys, argv, needle):
    try:
        code = main(["surface", str(ckpts[-1]), "--quiet", *argv])
    except SystemExit as exc:  # argparse-level errors exit from the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_missing_checkpoint_exit_2(tmp_path, capsys):
    assert main(["surface", str(tmp_path / "nope.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.safetensors" in err[0]


def test_demo_section_fast_and_model_untouched(tmp_path):
    """The demo's section on the demo architecture (64-256-128-10 MLP on digits)."""
    from deepscope._params import state_fingerprint
    from deepscope.data import load_dataset
    from deepscope.demo import DEMO_ARCH, DemoContext
    from deepscope.nets import build_model, complete_arch_spec
    from deepscope.report.landscape_surface import surface_section
    from deepscope.result import Result
    ds = load_dataset("digits")
    model = build_model(complete_arch_spec({**DEMO_ARCH, "input_shape": list(ds.input_shape),
                                            "num_outputs": 10}), seed=0)
    fp = state_fingerprint(model)
    ctx = DemoContext(out=tmp_path, checkpoint=Path(tmp_path / "m.safetensors"), model=model,
                      dataset=ds, train_result=Result("train", pd.DataFrame()), progress=False,
                      seed=0)
    t0 = time.process_time()  # CPU seconds of this process: robust on a shared machine
    sec = surface_section(ctx)
    elapsed = time.process_time() - t0
    assert state_fingerprint(model) == fp
    assert len(sec.figures) == 2 and len(sec.tables[0][1]) == 41
    assert sec.summary["center loss"] > 0 and sec.summary["plane max loss"] >= \
        sec.summary["plane min loss"]
    assert elapsed < 15, elapsed
    from deepscope.report.html import write_report
    page = write_report(tmp_path / "report", [sec])
    assert "Loss surface" in page.read_text()


def test_hessian_directions_through_cli(ckpts, capsys):
    assert main(["surface", str(ckpts[-1]), "--dims", "1", "--steps", "3", "--span", "0.1",
                 "--directions", "hessian", "--format", "json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["directions"] == "hessian"
    assert len(data["summary"]["hessian_eigenvalues"]) == 1
