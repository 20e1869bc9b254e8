"""Sweep specs: expansion counts, content ids, TOML loading, validation before any work."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import tiny_spec

from deepscope.errors import ConfigError
from deepscope.sweep import config_id, expand_spec, load_spec, run_sweep

FULL = tiny_spec(
    grid={"train.lr": [0.1, 0.01], "arch.widths": [[16], [8]]},
    random={"n": 3, "seed": 0, "choices": {"train.batch_size": [16, 32, 64]},
            "uniform": {"train.momentum": [0.0, 0.9]},
            "loguniform": {"train.weight_decay": [1e-5, 1e-3]},
            "randint": {"train.epochs": [1, 3]}},
    seeds=[0, 1])


def test_grid_times_random_times_seeds():
    tasks = expand_spec(FULL)
    assert len(tasks) == 2 * 2 * 3 * 2
    assert len({t.id for t in tasks}) == len(tasks)
    for t in tasks:
        assert set(t.assignments) == {"train.lr", "arch.widths", "train.batch_size",
                                      "train.momentum", "train.weight_decay", "train.epochs",
                                      "train.seed"}
        tr = t.config["train"]
        assert tr["batch_size"] in (16, 32, 64) and 0.0 <= tr["momentum"] < 0.9
        assert 1e-5 <= tr["weight_decay"] < 1e-3 and tr["epochs"] in (1, 2, 3)
        assert t.config["arch"]["widths"] == t.assignments["arch.widths"]
        assert t.config["arch"]["input_shape"] == [64] and t.config["arch"]["num_outputs"] == 10
        assert t.config["data"]["seed"] == 0  # the data seed stays fixed
    # the same 3 random draws are crossed with every grid point and seed
    draws = {(t.config["train"]["batch_size"], t.config["train"]["weight_decay"])
             for t in tasks}
    assert len(draws) == 3
    assert sorted({t.config["train"]["seed"] for t in tasks}) == [0, 1]


def test_counts_of_each_part_alone():
    assert len(expand_spec(tiny_spec())) == 1
    assert len(expand_spec(tiny_spec(seeds=[3, 4, 5]))) == 3
    assert len(expand_spec(tiny_spec(grid={"train.lr": [0.1, 0.2, 0.3]}))) == 3
    assert len(expand_spec(tiny_spec(random={"n": 4, "uniform": {"train.lr": [0.01, 0.1]}}))
               ) == 4


def test_ids_ignore_key_order_and_spelling_of_defaults():
    a = expand_spec(tiny_spec(grid={"train.lr": [0.1, 0.01]}, seeds=[0, 1]))
    reordered = {"seeds": [0, 1], "grid": {"train.lr": [0.1, 0.01]},
                 "base": {"train": {"batch_size": 32, "lr": 0.1, "epochs": 1},
                          "data": {"n_train": 200, "name": "digits"},
                          "arch": {"widths": [16], "arch": "mlp", "init": "default"}}}
    b = expand_spec(reordered)
    assert [t.id for t in a] == [t.id for t in b]
    # 1 vs 1.0 for a float field and an explicit default give the same completed config
    c = expand_spec(tiny_spec(grid={"train.lr": [1, 1.0]}, seeds=[0]))
    assert len(c) == 1
    # the random draws do not depend on the order of the keys either
    r1 = expand_spec(tiny_spec(random={"n": 2, "seed": 5, "uniform": {"train.lr": [0.01, 0.1]},
                                       "choices": {"train.batch_size": [16, 32]}}))
    r2 = expand_spec(tiny_spec(random={"choices": {"train.batch_size": [16, 32]}, "seed": 5,
                                       "uniform": {"train.lr": [0.01, 0.1]}, "n": 2}))
    assert [t.id for t in r1] == [t.id for t in r2]
    r3 = expand_spec(tiny_spec(random={"n": 2, "seed": 6, "uniform": {"train.lr": [0.01, 0.1]},
                                       "choices": {"train.batch_size": [16, 32]}}))
    assert [t.id for t in r1] != [t.id for t in r3]


def test_config_id_is_sha256_of_canonical_json():
    cfg = {"b": 1, "a": [1, 2.5, {"y": None, "x": True}]}
    want = hashlib.sha256(b'{"a":[1,2.5,{"x":true,"y":null}],"b":1}').hexdigest()[:16]
    assert config_id(cfg) == want
    assert config_id({"a": [1, 2.5, {"x": True, "y": None}], "b": 1}) == want
    with pytest.raises(ConfigError):
        config_id({"a": float("nan")})


def test_ids_stable_across_processes():
    here = [t.id for t in expand_spec(FULL)]
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from test_sweep_spec import FULL; from deepscope.sweep import expand_spec; "
            "print(json.dumps([t.id for t in expand_spec(FULL)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                         capture_output=True, text=True, env=env, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_toml_file_dotted_and_nested_keys(tmp_path):
    text = """
seeds = [0, 1]
[base.arch]
arch = "mlp"
widths = [16]
[base.data]
name = "digits"
n_train = 200
[base.train]
epochs = 1
[grid]
train.lr = [0.1, 0.01]
"arch.widths" = [[16], [8]]
[random]
n = 2
uniform = { "train.momentum" = [0.0, 0.9] }
"""
    path = tmp_path / "study.toml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec["grid"]["train"] == {"lr": [0.1, 0.01]}  # TOML's nested form
    from_file = expand_spec(path)
    as_dict = expand_spec(tiny_spec(grid={"train.lr": [0.1, 0.01], "arch.widths": [[16], [8]]},
                                    random={"n": 2, "uniform": {"train.momentum": [0.0, 0.9]}},
                                    seeds=[0, 1]))
    assert [t.id for t in from_file] == [t.id for t in as_dict]
    assert len(from_file) == 2 * 2 * 2 * 2
    # identical draws collapse into one task (ids are content hashes)
    same = expand_spec(tiny_spec(random={"n": 5, "choices": {"train.batch_size": [32]}}))
    assert len(same) == 1
    (tmp_path / "bad.toml").write_text("[grid\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_spec(tmp_path / "bad.toml")
    (tmp_path / "spec.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match=".toml or .json"):
        load_spec(tmp_path / "spec.yaml")


BAD = [
    ({**tiny_spec(), "grids": {}}, "grids"),
    (tiny_spec(grid={"train.lrr": [0.1]}), "train.lrr"),
    (tiny_spec(grid={"arch.widthz": [[16]]}), "widthz"),
    (tiny_spec(grid={"data.n_trian": [100]}), "n_trian"),
    (tiny_spec(grid={"model.widths": [[16]]}), "model.widths"),
    (tiny_spec(grid={"lr": [0.1]}), "lr"),
    (tiny_spec(grid={"train.lr": []}), "train.lr"),
    (tiny_spec(grid={"train.lr": 0.1}), "train.lr"),
    (tiny_spec(grid={"train.lr": ["fast"]}), "lr"),
    (tiny_spec(grid={"train.optimizer": ["sgd", "sgdd"]}), "sgdd"),
    (tiny_spec(random={"n": 0, "uniform": {"train.lr": [0.1, 0.2]}}), "random.n"),
    (tiny_spec(random={"uniform": {"train.lr": [0.1, 0.2]}}), "random.n"),
    (tiny_spec(random={"n": 2, "uniform": {"train.lr": [0.2, 0.1]}}), "train.lr"),
    (tiny_spec(random={"n": 2, "loguniform": {"train.lr": [0.0, 0.1]}}), "train.lr"),
    (tiny_spec(random={"n": 2, "normal": {"train.lr": [0.0, 0.1]}}), "normal"),
    (tiny_spec(random={"n": 2}), "random"),
    (tiny_spec(grid={"train.lr": [0.1]}, random={"n": 2, "uniform": {"train.lr": [0.1, 0.2]}}),
     "train.lr"),
    (tiny_spec(seeds=[0, -1]), "seeds"),
    (tiny_spec(seeds=[True]), "seeds"),
    (tiny_spec(seeds=[]), "seeds"),
    (tiny_spec(seeds=[0, 1], grid={"train.seed": [0, 1]}), "train.seed"),
    ({"grid": {"train.lr": [0.1]}}, "base"),
    ({"base": {**tiny_spec()["base"], "optimizer": {}}}, "optimizer"),
    ({"base": {"arch": {"widths": [16]}, "data": {"name": "digits"}}}, "arch"),
    ({"base": {"arch": {"arch": "mlp"}, "data": {"n_train": 10}}}, "name"),
    ({"base": {"arch": {"arch": "mlp"}, "data": "digitz"}}, "digitz"),
    ({"base": {"arch": {"arch": "mlp", "dropout": 2.0}, "data": "digits"}}, "dropout"),
]


@pytest.mark.parametrize("spec,key", BAD, ids=[k for _, k in BAD])
def test_bad_specs_name_the_key_before_any_work(spec, key, tmp_path):
    with pytest.raises(ConfigError) as info:
        expand_spec(spec)
    assert key in str(info.value)
    zoo = tmp_path / "zoo"
    with pytest.raises(ConfigError):
        run_sweep(spec, zoo, progress=False)
    assert not zoo.exists()  # rejected before anything was created or trained
