"""The gdv / cka commands and the gdv-depth experiment end to end through deepscope.cli.main."""
import json

import pytest

from deepscope.cli import main


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from deepscope.workflows import train_and_save
    d = tmp_path_factory.mktemp("rep")
    paths = []
    for seed in (0, 1):
        p = d / f"m{seed}.safetensors"
        train_and_save({"arch": "mlp", "widths": [16, 8]}, {"name": "digits", "n_train": 200},
                       {"optimizer": "sgd", "lr": 0.1, "epochs": 1, "batch_size": 50,
                        "seed": seed}, p, progress=False)
        paths.append(p)
    return paths


def test_gdv_table_json_and_out(checkpoints, capsys, tmp_path):
    assert main(["gdv", str(checkpoints[0]), "--max-per-class", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "act1" in out and "best_layer:" in out and "output_gdv:" in out
    assert main(["gdv", str(checkpoints[0]), "--layers", "fc1", "--layers", "re:^out$",
                 "--no-input", "--split", "test", "--format", "json", "--out",
                 str(tmp_path), "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "gdv" and [r["layer"] for r in data["table"]] == ["fc1", "out"]
    assert data["settings"]["split"] == "test"
    for name in ("gdv.csv", "gdv.json", "gdv_by_layer.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert main(["gdv", str(checkpoints[0]), "--format", "csv", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("layer,type,index,dim,n,gdv")


def test_cka_one_and_two_checkpoints(checkpoints, capsys, tmp_path):
    assert main(["cka", str(checkpoints[0]), "--max-samples", "100", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "act1" in out and "estimator: biased" in out
    assert main(["cka", str(checkpoints[0]), str(checkpoints[1]), "--unbiased",
                 "--max-samples", "80", "--format", "json", "--out", str(tmp_path),
                 "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["between_models"] and data["summary"]["estimator"] == "unbiased"
    assert data["summary"]["n"] == 80 and len(data["table"]) == 9
    for name in ("cka.csv", "cka_matrix.csv", "cka.json", "cka.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("argv, needle", [
    (["gdv", "{ck}", "--layers", "nope"], "matched no module"),
    (["cka", "{ck}", "--layers", "re:("], "invalid regex"),
    (["gdv", "{missing}"], "missing.safetensors"),
    (["cka", "{ck}", "{missing}"], "missing.safetensors"),
])
def test_bad_input_exits_2_with_one_line(checkpoints, capsys, tmp_path, argv, needle):
    argv = [a.format(ck=checkpoints[0], missing=tmp_path / "missing.safetensors") for a in argv]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deepscope: error:") and needle in err


def test_bad_option_is_a_parse_error(checkpoints, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["gdv", str(checkpoints[0]), "--max-per-class", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "gdv-depth", "--depths", "0,x"])
    assert exc.value.code == 2


def test_gdv_depth_experiment(capsys, tmp_path):
    argv = ["experiment", "gdv-depth", "--zoo", str(tmp_path / "zoo"), "--depths", "1,2",
            "--width", "8", "--dataset", "gaussian-mixture", "--n-train", "150",
            "--epochs", "1", "--max-per-class", "20", "--quiet", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "GDV per layer" in out and "mlp-1" in out and "mlp-2" in out
    assert "best output-layer GDV at depth" in out
    for name in ("gdv_depth.csv", "gdv_depth_nets.csv", "gdv_depth.json", "gdv_depth.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    assert main([*argv[:-2], "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "gdv-depth" and data["summary"]["trained_now"] == 0
