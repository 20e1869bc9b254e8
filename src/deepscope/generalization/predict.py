"""Predict the generalization gap of a zoo of models from margin signatures, and score every
generalization measure on the same zoo.

Pipeline of :func:`predict_gap` (Jiang, Krishnan, Mobahi & Bengio, ICLR 2019, Sec. 4; the
evaluation of Jiang et al., ICLR 2020):

1. :func:`deepscope.sweep.measure_zoo` runs the ``"margins"`` probe (and the ``"measures"``
   probe) over every finished run of the zoo (results are cached in the catalog, keyed by
   the probe options).
2. :func:`gap_table`: one row per run with its hyper-parameters, ``gap = train_acc -
   test_acc`` (final metrics of the run), the 20 log signature features
   ``log_l{k}_{stat}`` (:func:`deepscope.generalization.margins.log_features`) and each
   measure as ``measure.<name>``.
3. :func:`fit_gap_predictor`: linear regression gap ~ log signature on all runs
   (:func:`deepscope.generalization.scores.fit_linear`), k-fold R² / adjusted R² and the
   out-of-fold predictions (:func:`~deepscope.generalization.scores.kfold_r2`).
4. :func:`~deepscope.generalization.scores.score_measures`: Kendall τ, granulated Ψ and the
   PGDL conditional-mutual-information score of every measure and of the regression's
   out-of-fold prediction, plus the k-fold R² of a one-feature linear fit of each measure.

The fitted :class:`GapPredictor` is saved as JSON (coefficients, feature names, layer spec,
margin settings, fit statistics) and applied to new checkpoints with
:func:`apply_predictor`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepscope.errors import ConfigError
from deepscope.result import Result, _jsonable

__all__ = ["predict_gap", "gap_table", "hyperparameter_columns", "fit_gap_predictor",
           "GapPredictor", "GapResult", "apply_predictor", "load_predictor",
           "REGRESSION_NAME", "PREDICTOR_FORMAT"]

REGRESSION_NAME = "margin_signature_regression"
PREDICTOR_FORMAT = "deepscope-gap-predictor/1"
_MARGIN_KEYS = ("layers", "split", "batch_size", "correct_only")


# ----------------------------------------------------------------------------- predictor

@dataclass
class GapPredictor:
    """A linear model ``gap ≈ intercept + Σ coef_f · feature_f`` over log margin features.

    Attributes:
        feature_names: ``log_l{k}_{stat}`` in order.
        coef, intercept: on the raw (unstandardized) log features.
        layers: the margin layers (None: :func:`default_margin_layers` of each model).
        margin_options: the other options of :func:`margins` (split, correct_only, ...).
        ridge: the ridge penalty of the fit (0: least squares).
        stats: fit statistics (k-fold R², adjusted R², τ, n models, ...).
    """

    feature_names: list[str]
    coef: list[float]
    intercept: float
    layers: list[str] | None = None
    margin_options: dict[str, Any] = field(default_factory=dict)
    ridge: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def predict(self, features) -> np.ndarray:
        """Predicted gaps from log features: a DataFrame with ``feature_names`` columns, a
        Series / dict of one model, or an array ``(n, p)`` in ``feature_names`` order."""
        if isinstance(features, Mapping) or isinstance(features, pd.Series):
            features = pd.DataFrame([dict(features)])
        if isinstance(features, pd.DataFrame):
            missing = [f for f in self.feature_names if f not in features.columns]
            if missing:
                raise ConfigError(f"predictor needs features {', '.join(missing)}; got "
                                  f"{', '.join(map(str, features.columns))}")
            X = features[self.feature_names].to_numpy(dtype=float)
        else:
            X = np.atleast_2d(np.asarray(features, dtype=float))
        if X.shape[1] != len(self.coef):
            raise ConfigError(f"predictor has {len(self.coef)} features, got {X.shape[1]}")
        return self.intercept + X @ np.asarray(self.coef, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"format": PREDICTOR_FORMAT, **asdict(self)})

    def save(self, path: str | Path) -> Path:
        from deepscope._io import atomic_write
        path = Path(path)
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GapPredictor":
        if not isinstance(data, Mapping) or data.get("format") != PREDICTOR_FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ConfigError(f"not a gap predictor: expected format {PREDICTOR_FORMAT!r}, "
                              f"got {got!r}")
        try:
            p = cls(feature_names=list(data["feature_names"]),
                    coef=[float(c) for c in data["coef"]],
                    intercept=float(data["intercept"]), layers=data.get("layers"),
                    margin_options=dict(data.get("margin_options") or {}),
                    ridge=float(data.get("ridge", 0.0)), stats=dict(data.get("stats") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"gap predictor: missing or bad field ({exc})") from None
        if len(p.coef) != len(p.feature_names):
            raise ConfigError(f"gap predictor: {len(p.coef)} coefficients for "
                              f"{len(p.feature_names)} features")
        return p


def load_predictor(path: str | Path) -> GapPredictor:
    """Read a predictor written by :meth:`GapPredictor.save`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"predictor {str(path)!r}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"predictor {str(path)!r}: not JSON ({exc})") from None
    return GapPredictor.from_dict(data)


@dataclass(repr=False)
class GapResult(Result):
    """Result of :func:`predict_gap`: ``table`` = one row per measure (scores);
    ``models`` = one row per run (hyper-parameters, gap, features, measures, predictions);
    ``predictor`` = the fitted :class:`GapPredictor`."""

    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictor: GapPredictor | None = None


# ----------------------------------------------------------------------------- tables

def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def hyperparameter_columns(table: pd.DataFrame, *, exclude: Sequence[str] = ("train.seed",)
                           ) -> list[str]:
    """The ``arch.*``/``data.*``/``train.*`` columns taking more than one value, minus
    ``exclude`` (``arch.widths`` is replaced by the derived ``arch.depth``/``arch.width``)."""
    cols = []
    for c in table.columns:
        if not c.startswith(("arch.", "data.", "train.")) or c in exclude:
            continue
        if c == "arch.widths" and "arch.depth" in table.columns:
            continue
        if table[c].map(repr).nunique(dropna=False) > 1:
            cols.append(c)
    return cols


def gap_table(zoo_dir: str | Path, *, margin_options: Mapping[str, Any] | None = None,
              measure_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per finished run: hyper-parameters, ``train_acc``, ``test_acc``, ``gap``, the
    log signature (``log_l{k}_{stat}``) and ``measure.<name>`` columns.

    Margins and measures are read from the catalog under the settings hash of the given probe
    options (as :func:`predict_gap` passes them); runs without a margin result have NaN
    features. A tuple ``arch.widths`` also gives ``arch.depth`` (its length) and
    ``arch.width`` (its largest entry).
    """
    from deepscope.generalization.margins import log_features
    from deepscope.sweep import Catalog, settings_hash, zoo_table

    runs = zoo_table(zoo_dir, status="done", measurements=False)
    if "arch.widths" in runs.columns:
        w = runs["arch.widths"]
        runs["arch.depth"] = w.map(lambda v: len(v) if isinstance(v, tuple) else np.nan)
        runs["arch.width"] = w.map(lambda v: max(v) if isinstance(v, tuple) and v else np.nan)
    runs["train_acc"] = pd.to_numeric(runs.get("metrics.train_acc"), errors="coerce")
    runs["test_acc"] = pd.to_numeric(runs.get("metrics.test_acc"), errors="coerce")
    runs["gap"] = runs["train_acc"] - runs["test_acc"]
    h_m = settings_hash(dict(margin_options or {}))
    h_q = settings_hash(dict(measure_options or {})) if measure_options is not None else None
    feats: dict[str, dict[str, float]] = {}
    meas: dict[str, dict[str, float]] = {}
    with Catalog(zoo_dir, create=False) as cat:
        for m in cat.measurements("margins"):
            if m["settings_hash"] == h_m and m["error"] is None and m["summary"]:
                sig = m["summary"].get("signature") or {}
                feats[m["run_id"]] = {f"log_{k}": float(log_features(v))
                                      if v is not None else np.nan for k, v in sig.items()}
        if h_q is not None:
            for m in cat.measurements("measures"):
                if m["settings_hash"] == h_q and m["error"] is None and m["summary"]:
                    meas[m["run_id"]] = {f"measure.{k}": float(v)
                                         for k, v in m["summary"].items() if _finite(v)}
    extra = pd.DataFrame([{"id": i, **feats.get(i, {}), **meas.get(i, {})}
                          for i in runs["id"]])
    out = runs.merge(extra, on="id", how="left") if len(extra.columns) > 1 else runs
    return out


def _feature_columns(table: pd.DataFrame) -> list[str]:
    from deepscope.generalization.margins import STATS
    ks = sorted({int(c.split("_")[1][1:]) for c in table.columns
                 if c.startswith("log_l") and c.split("_")[1][1:].isdigit()})
    return [f"log_l{k}_{s}" for k in ks for s in STATS]


def fit_gap_predictor(table: pd.DataFrame, *, features: Sequence[str] | None = None,
                      gap: str = "gap", k: int = 5, seed: int = 0, ridge: float = 0.0,
                      layers: Sequence[str] | None = None,
                      margin_options: Mapping[str, Any] | None = None
                      ) -> tuple[GapPredictor, np.ndarray]:
    """Fit gap ~ features on every row with finite values; return the predictor and the
    k-fold out-of-fold predictions (NaN for rows left out)."""
    from deepscope.generalization.scores import kendall_tau, kfold_r2
    features = list(features) if features is not None else _feature_columns(table)
    if not features:
        raise ConfigError("no margin signature features (log_l*) in the table: were the "
                          "margins measured?")
    X = table[features].to_numpy(dtype=float)
    y = pd.to_numeric(table[gap], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(X).all(1) & np.isfinite(y)
    if ok.sum() < max(k, 3):
        raise ConfigError(f"the regression needs at least {max(k, 3)} models with margins "
                          f"and a gap, got {int(ok.sum())}")
    from deepscope.generalization.scores import fit_linear
    cv = kfold_r2(X[ok], y[ok], k=k, seed=seed, ridge=ridge)
    b, w, _, _ = fit_linear(X[ok], y[ok], ridge=ridge)
    oof = np.full(len(table), np.nan)
    oof[ok] = cv["oof"]
    stats = {"n_models": int(ok.sum()), "k": k, "seed": seed, "r2_cv": cv["r2"],
             "adj_r2_cv": cv["adj_r2"], "r2_train": cv["r2_train"],
             "adj_r2_train": cv["adj_r2_train"], "tau_cv": kendall_tau(cv["oof"], y[ok])}
    opts = {key: v for key, v in dict(margin_options or {}).items() if key != "layers"}
    pred = GapPredictor(feature_names=features, coef=[float(c) for c in w], intercept=b,
                        layers=list(layers) if layers is not None else None,
                        margin_options=opts, ridge=float(ridge), stats=stats)
    return pred, oof


def _single_r2(table: pd.DataFrame, col: str, gap: str, k: int, seed: int) -> float:
    from deepscope.generalization.scores import kfold_r2
    x = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(table[gap], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < max(k, 3):
        return float("nan")
    return float(kfold_r2(x[ok, None], y[ok], k=k, seed=seed)["r2"])


# ----------------------------------------------------------------------------- main

def predict_gap(zoo_dir: str | Path, *, layers: Sequence[str] | None = None,
                margin_options: Mapping[str, Any] | None = None, measures: bool = True,
                measure_options: Mapping[str, Any] | None = None, k: int = 5, seed: int = 0,
                ridge: float = 0.0, hyperparams: Sequence[str] | None = None,
                fixed: Sequence[str] = ("train.seed",), cmi_size: int = 2,
                runs: Sequence[str] | None = None, engine: str = "local",
                workers: int | None = None, address: str | None = None,
                threads: int | None = None, task_cpus: float = 1, task_gpus: float = 0,
                progress: bool = True) -> GapResult:
    """Measure a zoo, fit the margin-signature gap predictor, score every measure.

    Args:
        zoo_dir: a zoo made by :func:`deepscope.sweep.run_sweep` (classification models).
        layers: margin layers (default: :func:`default_margin_layers` of each model).
        margin_options: other options of :func:`margins` (``split``, ``correct_only``,
            ``batch_size``).
        measures: also run the ``"measures"`` probe and score each measure.
        measure_options: options of the measures probe (``which``, ``seed``, ...).
        k, seed: folds and fold seed of the cross-validation.
        ridge: ridge penalty on standardized features (0: least squares, the paper).
        hyperparams: columns for Ψ and CMI (default: :func:`hyperparameter_columns`).
        fixed: columns held fixed in Ψ's groups without being scored (the seed).
        cmi_size: size of the conditioning sets of the CMI score (2: PGDL).
        runs: restrict to these run ids (default: every finished run of the zoo).
        engine, workers, address, threads, task_cpus, task_gpus: how the probes run (see
            ``measure_zoo``).
        progress: progress bars.

    Returns:
        :class:`GapResult`: ``table`` with columns ``measure, n, tau, psi, cmi, cmi_argmin,
        r2_cv, psi.<hp>...``; the regression's row is ``margin_signature_regression`` (its
        measure is the out-of-fold prediction).
    """
    from deepscope.generalization.scores import score_measures
    from deepscope.sweep import measure_zoo

    mopts = dict(margin_options or {})
    bad = [key for key in mopts if key not in _MARGIN_KEYS]
    if bad:
        raise ConfigError(f"margin_options: unknown key(s) {', '.join(bad)}; expected some of "
                          f"{', '.join(_MARGIN_KEYS)}")
    if layers is not None:
        mopts["layers"] = [str(x) for x in layers]
    qopts = dict(measure_options or {})
    probes = ["margins"] + (["measures"] if measures else [])
    options = {"margins": mopts, **({"measures": qopts} if measures else {})}
    run = measure_zoo(zoo_dir, probes, options=options, engine=engine, workers=workers,
                      address=address, threads=threads, task_cpus=task_cpus,
                      task_gpus=task_gpus, progress=progress,
                      runs=list(runs) if runs is not None else None)
    table = gap_table(zoo_dir, margin_options=mopts,
                      measure_options=qopts if measures else None)
    if runs is not None:
        table = table[table["id"].isin(set(runs))].reset_index(drop=True)
    predictor, oof = fit_gap_predictor(table, k=k, seed=seed, ridge=ridge,
                                       layers=mopts.get("layers"), margin_options=mopts)
    table[REGRESSION_NAME] = oof
    hps = (list(hyperparams) if hyperparams is not None
           else hyperparameter_columns(table, exclude=("train.seed", *fixed)))
    fixed_cols = [c for c in fixed if c in table.columns]
    measure_cols = {REGRESSION_NAME: REGRESSION_NAME}
    measure_cols.update({c[len("measure."):]: c for c in table.columns
                         if c.startswith("measure.")})
    scores = score_measures(table, measure_cols, "gap", hps, fixed=fixed_cols,
                            cmi_size=cmi_size)
    scores["r2_cv"] = [predictor.stats["r2_cv"] if name == REGRESSION_NAME
                       else _single_r2(table, col, "gap", k, seed)
                       for name, col in measure_cols.items()]
    errors = {key: v for key, v in run.errors.items()}
    summary = {"n_models": int(len(table)), **predictor.stats,
               "measured_now": run.done, "failed": run.failed,
               "hyperparams": hps, "fixed": fixed_cols,
               "gap_mean": float(np.nanmean(table["gap"])) if len(table) else float("nan"),
               "gap_std": float(np.nanstd(table["gap"])) if len(table) else float("nan")}
    if errors:
        summary["errors"] = dict(list(errors.items())[:10])
    settings = {"zoo_dir": str(zoo_dir), "layers": mopts.get("layers"),
                "margin_options": mopts, "measures": measures, "measure_options": qopts,
                "k": k, "seed": seed, "ridge": ridge, "cmi_size": cmi_size, "engine": engine}
    return GapResult("predict-gap", scores, summary=summary, settings=settings,
                     models=table, predictor=predictor)


def apply_predictor(predictor: GapPredictor | str | Path,
                    checkpoints: Sequence[str | Path] | str | Path, *,
                    progress: bool = True) -> Result:
    """Predict the gap of each checkpoint with a saved predictor.

    The margins are measured with the predictor's layers and options on each checkpoint's
    own dataset. Table: ``checkpoint, predicted_gap, train_acc, test_acc, gap`` (the last
    three from the checkpoint's stored metrics, NaN when absent) and the log features.
    """
    from deepscope._progress import progress_bar
    from deepscope.generalization.margins import margins
    from deepscope.train.checkpoint import load_checkpoint

    if not isinstance(predictor, GapPredictor):
        predictor = load_predictor(predictor)
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    checkpoints = list(checkpoints)
    if not checkpoints:
        raise ConfigError("apply_predictor: expected at least one checkpoint")
    rows = []
    for path in progress_bar(checkpoints, enabled=progress, desc="predict gap", unit="model"):
        ckpt = load_checkpoint(path)
        res = margins(ckpt.model, ckpt.dataset(), layers=predictor.layers, progress=False,
                      **predictor.margin_options)
        feats = res.signature(log=True)
        missing = [f for f in predictor.feature_names if f not in feats.index]
        if missing:
            raise ConfigError(f"{path}: the margins give features {', '.join(feats.index)}, "
                              f"the predictor needs {', '.join(missing)}")
        met = ckpt.metrics or {}
        tr, te = met.get("train_acc"), met.get("test_acc")
        row = {"checkpoint": str(path),
               "predicted_gap": float(predictor.predict(feats[predictor.feature_names])[0]),
               "train_acc": tr if _finite(tr) else np.nan,
               "test_acc": te if _finite(te) else np.nan}
        row["gap"] = row["train_acc"] - row["test_acc"]
        row.update({f: float(feats[f]) for f in predictor.feature_names})
        rows.append(row)
    table = pd.DataFrame(rows)
    err = (table["predicted_gap"] - table["gap"]).abs()
    summary = {"n_models": len(table),
               "mean_abs_error": float(err.mean()) if err.notna().any() else None,
               "predictor_r2_cv": predictor.stats.get("r2_cv")}
    return Result("gap-prediction", table, summary=summary,
                  settings={"layers": predictor.layers, **predictor.margin_options})
