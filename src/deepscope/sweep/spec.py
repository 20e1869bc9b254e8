"""Sweep specs: a base run plus the ways it varies -> a list of :class:`Task` with content ids.

A spec is a dict (or a TOML / JSON file, see :func:`load_spec`) with these top-level keys;
only ``base`` is required::

    seeds = [0, 1]                     # -> train.seed (TOML: top-level keys before tables)

    [base.arch]                        # an architecture spec (deepscope.nets); input_shape
    arch = "mlp"                       # and num_outputs are filled from the dataset
    widths = [16]
    [base.data]                        # a dataset spec (deepscope.data); a bare name works too
    name = "digits"
    n_train = 200
    [base.train]                       # TrainConfig fields
    epochs = 2

    [grid]                             # cartesian product; each value lists the candidates
    "train.lr" = [0.1, 0.01]
    "arch.widths" = [[16], [32]]

    [random]                           # n random draws (numpy default_rng(seed))
    n = 4
    seed = 0                           # default 0
    choices = { "train.batch_size" = [16, 32, 64] }     # uniform over a list
    uniform = { "train.momentum" = [0.0, 0.9] }         # float in [low, high)
    loguniform = { "train.weight_decay" = [1e-5, 1e-3] } # log-uniform in [low, high), low > 0
    randint = { "train.epochs" = [1, 3] }                # integer in [low, high]

The same as a Python dict: ``{"base": {"arch": {...}, "data": {...}, "train": {...}},
"grid": {"train.lr": [0.1, 0.01]}, "random": {"n": 4, "choices": {...}}, "seeds": [0, 1]}``.

Keys address one field of one section as ``"section.field"`` with section ``arch``, ``data``
or ``train``. Unquoted TOML dotted keys (``train.lr = [...]``) give the nested form
``{"train": {"lr": [...]}}``, which is accepted as well.

Expansion: tasks = grid points x random draws x seeds, in that nesting order (grid outermost).
The random draws are made once (keys drawn in sorted order, so the draws do not depend on the
order of the keys in the file) and crossed with every grid point, so each grid point sees the
same n random settings. ``seeds`` sets ``train.seed`` (model initialization, batch order,
dropout); the dataset seed (``data.seed``: splits, subsets, label noise) stays at the base's
value unless the grid or the random section varies it. Without ``seeds`` each point runs once
with the base's ``train.seed``.

Every expanded config is completed and validated before any training starts:
:func:`deepscope.data.complete_dataset_spec`, the dataset is loaded (once per distinct data
spec) to fill the architecture's ``input_shape``/``num_outputs``
(:func:`deepscope.workflows.fit_arch_to_data`), :func:`deepscope.nets.complete_arch_spec`,
and :meth:`deepscope.train.TrainConfig.from_dict`. Problems raise
:class:`~deepscope.errors.ConfigError` naming the offending key.

Task ids: the first 16 hex digits of the sha256 of the canonical JSON (sorted keys, no
whitespace) of the completed config ``{"arch": ..., "data": ..., "train": ...}``. Because the
config is completed (defaults filled, types normalized), the id does not depend on key order,
on spelling a default out or leaving it implicit, or on ``1`` vs ``1.0`` for a float field.
Two grid points that complete to the same config are one task (the first one is kept).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import numbers
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from deepscope.errors import ConfigError, DataError, DeepscopeError, unknown_name
from deepscope.result import _jsonable

__all__ = ["Task", "expand_spec", "load_spec", "config_id", "canonical_json",
           "SPEC_KEYS", "SECTIONS", "RANDOM_KINDS"]

SPEC_KEYS = ("base", "grid", "random", "seeds")
SECTIONS = ("arch", "data", "train")
RANDOM_KINDS = ("choices", "uniform", "loguniform", "randint")
_RANDOM_KEYS = ("n", "seed", *RANDOM_KINDS)


@dataclass(frozen=True)
class Task:
    """One training run of a sweep.

    Attributes:
        id: content hash of ``config`` (16 hex digits), see :func:`config_id`.
        config: the completed ``{"arch": ..., "data": ..., "train": ...}``.
        assignments: the dotted keys this task sets on top of the base (``"train.lr": 0.1``).
    """

    id: str
    config: dict[str, Any]
    assignments: dict[str, Any]

    @property
    def label(self) -> str:
        """``train.lr=0.1 arch.widths=[16]``: what distinguishes this task from the base."""
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.assignments.items()) or "base"


# ----------------------------------------------------------------------------- hashing

def _plain(x: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python; NaN/inf and other types are left to fail."""
    if isinstance(x, Mapping):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; tuples become lists, NaN/inf are refused."""
    try:
        return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected plain JSON values (dict, list, str, finite number, "
                          f"bool, null), got {exc}") from None


def config_id(config: Mapping[str, Any]) -> str:
    """The first 16 hex digits of sha256(canonical JSON of ``config``)."""
    return hashlib.sha256(canonical_json(config).encode("ascii")).hexdigest()[:16]


# ----------------------------------------------------------------------------- loading

def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a sweep spec from a ``.toml`` or ``.json`` file (not validated yet)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {str(path)!r}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        if suffix == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ConfigError(f"sweep spec {str(path)!r}: expected a JSON object, got "
                                  f"{type(data).__name__}")
            return data
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"sweep spec {str(path)!r}: cannot parse ({exc})") from None
    raise ConfigError(f"sweep spec {str(path)!r}: expected a .toml or .json file, got "
                      f"suffix {suffix!r}")


# ----------------------------------------------------------------------------- structure

def _address(key: Any, where: str) -> tuple[str, str]:
    if not isinstance(key, str) or key.count(".") != 1:
        raise ConfigError(f"{where}: key {key!r} must look like 'section.field' with section "
                          f"one of {', '.join(SECTIONS)} (e.g. 'train.lr')")
    section, name = key.split(".")
    if section not in SECTIONS:
        raise ConfigError(f"{where}: key {key!r}: unknown section {section!r}, expected one "
                          f"of {', '.join(SECTIONS)}")
    if not name:
        raise ConfigError(f"{where}: key {key!r} names no field")
    if section == "train":
        from deepscope.train import TrainConfig
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        if name not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}: expected train.<field> with "
                              f"field one of {', '.join(fields)}")
    return section, name


def _flat_keys(table: Any, where: str) -> dict[str, Any]:
    """``{"train.lr": v}`` or the nested ``{"train": {"lr": v}}`` -> ``{"train.lr": v}``."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of 'section.field' keys, got "
                          f"{type(table).__name__}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in SECTIONS and isinstance(value, Mapping):
            items = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            items = [(key, value)]
        for dotted, v in items:
            _address(dotted, where)
            if dotted in out:
                raise ConfigError(f"{where}: key {dotted!r} is given twice")
            out[dotted] = v
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v)))


def _base(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if "base" not in spec:
        raise ConfigError("sweep spec: missing key 'base' (a table with arch, data and train)")
    base = spec["base"]
    if not isinstance(base, Mapping):
        raise ConfigError(f"base: expected a table with arch, data, train, got "
                          f"{type(base).__name__}")
    out: dict[str, dict[str, Any]] = {"arch": {}, "data": {}, "train": {}}
    for key, value in base.items():
        if key not in SECTIONS:
            raise unknown_name("key in 'base'", key, SECTIONS)
        if key == "data" and isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise ConfigError(f"base.{key}: expected a table, got {type(value).__name__}")
        out[key] = copy.deepcopy(dict(value))
    if "arch" not in out["arch"]:
        raise ConfigError(f"base.arch: missing key 'arch': expected one of cnn, lstm, mlp, "
                          f"resnet (got keys {sorted(out['arch'])})")
    if "name" not in out["data"]:
        raise ConfigError(f"base.data: missing key 'name' (the dataset, e.g. 'digits'); got "
                          f"keys {sorted(out['data'])}")
    return out


def _grid(spec: Mapping[str, Any]) -> dict[str, list[Any]]:
    grid = _flat_keys(spec.get("grid", {}), "grid")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"grid[{key!r}]: expected a list of candidate values, got "
                              f"{values!r}")
        if len(values) == 0:
            raise ConfigError(f"grid[{key!r}]: empty list: give at least one value")
        grid[key] = list(values)
    return grid


def _interval(kind: str, key: str, v: Any) -> tuple[float, float]:
    where = f"random.{kind}[{key!r}]"
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_real(x) for x in v):
        raise ConfigError(f"{where}: expected [low, high] (two finite numbers), got {v!r}")
    lo, hi = v
    if kind == "randint" and not (_is_int(lo) and _is_int(hi)):
        raise ConfigError(f"{where}: expected [low, high] integers, got {v!r}")
    if lo > hi:
        raise ConfigError(f"{where}: low must be <= high, got {v!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {v!r}")
    return lo, hi


def _random_section(spec: Mapping[str, Any]) -> tuple[int, int, dict[tuple[str, str], Any]]:
    """(n, seed, {(kind, key): choices or interval}) of the ``random`` table."""
    if "random" not in spec:
        return 0, 0, {}
    rnd = spec["random"]
    if not isinstance(rnd, Mapping):
        raise ConfigError(f"random: expected a table, got {type(rnd).__name__}")
    for key in rnd:
        if key not in _RANDOM_KEYS:
            raise unknown_name("key in 'random'", key, _RANDOM_KEYS)
    n, seed = rnd.get("n"), rnd.get("seed", 0)
    if not _is_int(n) or n < 1:
        raise ConfigError(f"random.n: expected a positive integer (number of draws), got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"random.seed: expected an integer >= 0, got {seed!r}")
    dists: dict[tuple[str, str], Any] = {}
    seen: dict[str, str] = {}
    for kind in RANDOM_KINDS:
        for key, v in _flat_keys(rnd.get(kind, {}), f"random.{kind}").items():
            if key in seen:
                raise ConfigError(f"random: key {key!r} appears in both random.{seen[key]} "
                                  f"and random.{kind}")
            seen[key] = kind
            if kind == "choices":
                if not isinstance(v, (list, tuple)) or not v:
                    raise ConfigError(f"random.choices[{key!r}]: expected a non-empty list, "
                                      f"got {v!r}")
                dists[(kind, key)] = list(v)
            else:
                dists[(kind, key)] = _interval(kind, key, v)
    if not dists:
        raise ConfigError(f"random: no distributions: give at least one key under "
                          f"{', '.join(RANDOM_KINDS)}")
    return int(n), int(seed), dists


def _draws(n: int, seed: int, dists: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        draw: dict[str, Any] = {}
        for kind, key in sorted(dists):
            d = dists[(kind, key)]
            if kind == "choices":
                draw[key] = copy.deepcopy(d[int(rng.integers(len(d)))])
            elif kind == "uniform":
                draw[key] = float(rng.uniform(d[0], d[1]))
            elif kind == "loguniform":
                draw[key] = float(math.exp(rng.uniform(math.log(d[0]), math.log(d[1]))))
            else:
                draw[key] = int(rng.integers(int(d[0]), int(d[1]) + 1))
        out.append(draw)
    return out


def _seeds(spec: Mapping[str, Any]) -> list[int] | None:
    if "seeds" not in spec:
        return None
    seeds = spec["seeds"]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"seeds: expected a non-empty list of integers >= 0, got {seeds!r}")
    for s in seeds:
        if not _is_int(s) or s < 0:
            raise ConfigError(f"seeds: expected integers >= 0, got {s!r}")
    if len(set(int(s) for s in seeds)) != len(seeds):
        raise ConfigError(f"seeds: duplicate values in {list(seeds)!r}")
    return [int(s) for s in seeds]


# ----------------------------------------------------------------------------- completion

class _Completer:
    """Completes expanded configs; loads each distinct dataset once for its shapes."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[list[int], int]] = {}

    def __call__(self, raw: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
        from deepscope.data import complete_dataset_spec, load_dataset
        from deepscope.nets import complete_arch_spec
        from deepscope.train import TrainConfig
        from deepscope.workflows import fit_arch_to_data

        data = self._run(complete_dataset_spec, raw["data"], f"{where}: data")
        key = canonical_json(data)
        if key not in self._shapes:
            ds = self._run(load_dataset, data, f"{where}: data")
            self._shapes[key] = (list(ds.input_shape), int(ds.num_outputs))
        shape, outputs = self._shapes[key]

        shapes = SimpleNamespace(input_shape=shape, num_outputs=outputs)  # all fit_arch reads
        arch = self._run(complete_arch_spec, fit_arch_to_data(raw["arch"], shapes),
                         f"{where}: arch")
        train = self._run(lambda d: TrainConfig.from_dict(d).to_dict(), raw["train"],
                          f"{where}: train")
        return {"arch": arch, "data": data, "train": train}

    @staticmethod
    def _run(fn, arg, where: str):
        try:
            return fn(arg)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        except DeepscopeError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _check_keys(spec: Any) -> None:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"sweep spec: expected a dict (or a .toml/.json file), got "
                          f"{type(spec).__name__}")
    for key in spec:
        if key not in SPEC_KEYS:
            raise unknown_name("sweep spec key", key, SPEC_KEYS)


def expand_spec(spec: Mapping[str, Any] | str | Path) -> list[Task]:
    """Validate a sweep spec and expand it into tasks (see the module docstring).

    ``spec`` is a dict or the path of a ``.toml``/``.json`` file. Every task's config is
    completed and validated here, before any work; the first problem raises
    :class:`~deepscope.errors.ConfigError` (a missing data file: ``DataError``) naming the key.
    """
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    _check_keys(spec)
    base = _base(spec)
    grid = _grid(spec)
    n, seed, dists = _random_section(spec)
    seeds = _seeds(spec)
    for key in grid:
        if any(key == k for _, k in dists):
            raise ConfigError(f"key {key!r} is both in grid and in random: vary it in one")
    varied = set(grid) | {k for _, k in dists}
    if seeds is not None and "train.seed" in varied:
        raise ConfigError("key 'train.seed' is varied by grid/random and by 'seeds': use one")

    draws = _draws(n, seed, dists) if dists else [{}]
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    seed_sets = [{"train.seed": s} for s in seeds] if seeds is not None else [{}]

    complete = _Completer()
    tasks: dict[str, Task] = {}
    for point, draw, seed_set in itertools.product(points, draws, seed_sets):
        assignments = {**point, **draw, **seed_set}
        raw = copy.deepcopy(base)
        for dotted, value in assignments.items():
            section, name = dotted.split(".")
            raw[section][name] = copy.deepcopy(value)
        where = "task " + (" ".join(f"{k}={json.dumps(_jsonable(v))}"
                                    for k, v in assignments.items()) or "base")
        config = complete(raw, where)
        task_id = config_id(config)
        if task_id not in tasks:
            tasks[task_id] = Task(task_id, config, _jsonable(assignments))
    return list(tasks.values())
