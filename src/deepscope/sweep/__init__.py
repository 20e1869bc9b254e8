"""Sweeps and model zoos: resumable studies on a local pool or a Ray cluster.

A sweep spec (a dict or a TOML/JSON file, format in :mod:`deepscope.sweep.spec`) expands into
tasks with content-hash ids; :func:`run_sweep` trains them with an engine (``"local"``,
``"process"``, ``"ray"``) into a zoo directory::

    ZOO_DIR/catalog.sqlite          runs + measurements (deepscope.sweep.catalog)
    ZOO_DIR/runs/<id>.safetensors   one deepscope checkpoint per finished run

Re-running a sweep skips what is done. :func:`measure_zoo` runs registered probes
(:func:`register_probe`) over every finished run and stores their results;
:func:`zoo_table` lists runs with flattened hyper-parameters, metrics and probe summaries.

    >>> from deepscope.sweep import run_sweep, measure_zoo, zoo_table
    >>> summary = run_sweep("study.toml", "zoo/", engine="process", workers=4)
    >>> measure_zoo("zoo/", ["spectra"])
    >>> zoo_table("zoo/", varying_only=True)
"""
from deepscope.sweep.catalog import Catalog
from deepscope.sweep.engines import ENGINES
from deepscope.sweep.probes import (get_probe, measure_zoo, register_probe, registered_probes,
                                    settings_hash, unregister_probe)
from deepscope.sweep.runner import SweepSummary, run_sweep
from deepscope.sweep.spec import Task, canonical_json, config_id, expand_spec, load_spec
from deepscope.sweep.table import export_zoo, zoo_table

__all__ = [
    # verbs
    "run_sweep", "measure_zoo", "zoo_table", "export_zoo", "expand_spec", "load_spec",
    "register_probe", "unregister_probe", "registered_probes", "get_probe",
    # ids
    "config_id", "settings_hash", "canonical_json",
    # types and names
    "Task", "SweepSummary", "Catalog", "ENGINES",
]
