"""The three engines train the same tasks to the same weights and metrics."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from sweep_helpers import tiny_spec, weights_of

from deepscope.sweep import Catalog, expand_spec, measure_zoo, run_sweep

SPEC = tiny_spec(grid={"train.lr": [0.1, 0.05]}, seeds=[0, 1])
SPEC["base"]["train"]["epochs"] = 2


@pytest.fixture(scope="module")
def local_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("local")
    before = torch.get_num_threads()
    # the same number of torch threads everywhere: CPU reductions depend on it
    assert run_sweep(SPEC, path, threads=1, progress=False).done == 4
    assert torch.get_num_threads() == before  # the caller's setting is restored
    return path


def _same_zoo(a, b) -> None:
    with Catalog(a, create=False) as ca, Catalog(b, create=False) as cb:
        ra = {r["id"]: r for r in ca.runs()}
        rb = {r["id"]: r for r in cb.runs()}
    assert set(ra) == set(rb) == {t.id for t in expand_spec(SPEC)}
    for i in ra:
        assert rb[i]["status"] == "done"
        assert ra[i]["metrics"] == {**rb[i]["metrics"], "time_s": ra[i]["metrics"]["time_s"]}
        wa = weights_of(a / ra[i]["checkpoint"])
        wb = weights_of(b / rb[i]["checkpoint"])
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), i


def test_process_pool_matches_local(local_zoo, tmp_path):
    summary = run_sweep(SPEC, tmp_path, engine="process", workers=2, progress=False)
    assert (summary.done, summary.failed) == (4, 0)
    _same_zoo(local_zoo, tmp_path)
    with Catalog(tmp_path, create=False) as cat:
        assert len({r["host"] for r in cat.runs()}) == 1


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")
def test_ray_matches_local_and_leaves_callers_ray_running(local_zoo, tmp_path):
    import ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        summary = run_sweep(SPEC, tmp_path, engine="ray", progress=False)  # 1 CPU, 1 thread
        assert (summary.done, summary.failed) == (4, 0)
        assert ray.is_initialized()  # we did not start it, so we did not shut it down
        again = run_sweep(SPEC, tmp_path, engine="ray", progress=False)
        assert (again.done, again.skipped) == (0, 4)
        if importlib.util.find_spec("deepscope.weights.probe") is not None:
            measured = measure_zoo(tmp_path, ["spectra"], engine="ray", progress=False)
            assert (measured.done, measured.failed) == (4, 0), measured.errors
    finally:
        ray.shutdown()
    _same_zoo(local_zoo, tmp_path)
