"""`deepscope measures CKPT` end to end through deepscope.cli.main."""
import json

import pandas as pd
import pytest
import torch

from deepscope.cli import main


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from deepscope.workflows import train_and_save
    path = tmp_path_factory.mktemp("measures") / "model.safetensors"
    train_and_save({"arch": "mlp", "widths": [8]}, {"name": "digits", "n_train": 200},
                   {"optimizer": "sgd", "lr": 0.1, "epochs": 2, "batch_size": 50, "seed": 0},
                   path, progress=False)
    return path


def test_table_output_uses_the_checkpoint_init(checkpoint, capsys):
    code = main(["measures", str(checkpoint), "--which", "params,fro_dist,path_norm",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fro_dist" in out and "path_norm" in out and "params" in out
    assert "omitted" not in out  # init weights come from the checkpoint


def test_json_matches_api_and_no_init(checkpoint, capsys):
    import deepscope
    from deepscope.generalization.measures import measures
    code = main(["measures", str(checkpoint), "--which", "fro_dist,param_norm,output_margin",
                 "--no-init", "--format", "json", "--quiet"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "measures"
    assert set(data["summary"]) == {"param_norm", "output_margin"}
    assert "init_params" in data["settings"]["omitted"]["fro_dist"]
    ck = deepscope.load(checkpoint)
    ref = measures(ck.model, ck.dataset(), which=["param_norm", "output_margin"],
                   progress=False)
    assert data["summary"]["param_norm"] == pytest.approx(ref.summary["param_norm"], rel=1e-12)
    assert data["summary"]["output_margin"] == pytest.approx(ref.summary["output_margin"],
                                                             rel=1e-12)


def test_csv_and_out_dir(checkpoint, capsys, tmp_path):
    code = main(["measures", str(checkpoint), "--which", "pacbayes_sigma,pacbayes_init",
                 "--max-samples", "80", "--format", "csv", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "measure,value,family,note" and len(lines) == 3
    table = pd.read_csv(tmp_path / "measures.csv")
    assert list(table["measure"]) == ["pacbayes_sigma", "pacbayes_init"]
    saved = json.loads((tmp_path / "measures.json").read_text())
    assert saved["settings"]["num_samples"] == 80
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert list(layers["layer"]) == ["fc1", "out"]


@pytest.mark.parametrize("args, needle", [
    (["measures", "MISSING"], "no such file"),
    (["measures", "CKPT", "--which", "margin"], "--which"),
    (["measures", "CKPT", "--max-samples", "0"], "positive integer"),
])
def test_bad_input_exits_2_with_one_line(checkpoint, tmp_path, capsys, args, needle):
    args = [str(tmp_path / "missing.safetensors") if a == "MISSING" else
            str(checkpoint) if a == "CKPT" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_demo_section(checkpoint, tmp_path):
    import deepscope
    from deepscope.demo import DemoContext
    from deepscope.report.measures import measures_section
    from deepscope.result import Result
    ck = deepscope.load(checkpoint)
    ctx = DemoContext(out=tmp_path, checkpoint=checkpoint, model=ck.model,
                      dataset=ck.dataset(), train_result=Result("train", pd.DataFrame()),
                      progress=False, seed=0)
    sec = measures_section(ctx)
    assert sec.title == "Generalization measures"
    names = list(sec.tables[0][1]["measure"])
    assert "pacbayes_init" in names and "fro_dist" in names  # init from the checkpoint
    assert sec.summary["params"] == ck.num_parameters()
    assert list(sec.tables[1][1]["layer"]) == ["fc1", "out"]
