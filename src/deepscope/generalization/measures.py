"""``measures()``: the generalization measures of Jiang, Neyshabur, Mobahi, Krishnan & Bengio,
"Fantastic generalization measures and where to find them" (ICLR 2020, appendix C).

Names follow the paper's (dots -> underscores; ``/`` -> ``_over_``); equation numbers are the
paper's. ``W_i`` are the ``d`` BatchNorm-folded layer matrices (:mod:`.bn_fold`; conv kernels
reshaped to ``(C_out, C_in·k…)``, spectral norm of that matrix: :mod:`.norms`), ``θ`` the
vector of all ``ω`` parameters of the (unfolded) model, ``θ0``/``W0_i`` their initial values,
``m`` the training-set size and ``γ`` the output margin:

====================================  =========================================================
output_margin                         γ = 10th percentile over the training set of
                                      ``f_y(x) - max_{j≠y} f_j(x)`` (numpy's linear rule)
inverse_margin (22)                   1/γ²
params (20)                           ω
log_prod_of_spec (32)                 Σ log ‖W_i‖₂²
log_prod_of_spec_over_margin (31)     log_prod_of_spec - 2 log γ
log_sum_of_spec (35)                  log d + log_prod_of_spec / d  (= log of d·(Π‖W_i‖₂²)^(1/d))
log_sum_of_spec_over_margin (34)      log d + (log_prod_of_spec - 2 log γ) / d
fro_over_spec (33)                    Σ ‖W_i‖_F² / ‖W_i‖₂²
log_spec_orig_main (30)               log_prod_of_spec_over_margin + log fro_over_spec
log_spec_init_main (29)               log_prod_of_spec_over_margin + log Σ ‖W_i-W0_i‖_F²/‖W_i‖₂²
log_prod_of_fro (37)                  Σ log ‖W_i‖_F²
log_prod_of_fro_over_margin (36)      log_prod_of_fro - 2 log γ
log_sum_of_fro (39)                   log d + log_prod_of_fro / d
log_sum_of_fro_over_margin (38)       log d + (log_prod_of_fro - 2 log γ) / d
param_norm (42)                       Σ ‖W_i‖_F²
fro_dist (40)                         Σ ‖W_i - W0_i‖_F²
dist_spec_init (41)                   Σ ‖W_i - W0_i‖₂²
dist_from_init                        ‖θ - θ0‖₂ (all parameters, unfolded)
path_norm (44)                        Σ outputs of the folded net with squared parameters on
                                      an all-ones input (ReLU nets)
path_norm_over_margin (43)            path_norm / γ²
pacbayes_sigma, pacbayes_flatness     σ of :func:`.flatness.pacbayes_sigma`; 1/σ² (53)
pacbayes_init / pacbayes_orig (48/49) ‖θ-θ0‖² / (4σ²) + log(m/σ) + 10  /  ‖θ‖² instead
pacbayes_mag_sigma, _mag_flatness     σ' with noise variance σ'²θ_i² + ε², ε = 1e-3; 1/σ'² (61)
pacbayes_mag_init (56)                ¼ Σ_i log[(ε² + (σ'²+1)‖θ-θ0‖²/ω) / (ε² + σ'²(θ_i-θ0_i)²)]
                                      + log(m/σ') + 10
pacbayes_mag_orig (57)                the same with θ in place of θ - θ0
sharpness_alpha, sharpness_flatness   α of :func:`.flatness.sharpness_alpha` (box
                                      |u_i| ≤ α); 1/α² (54)
sharpness_init / sharpness_orig       ‖θ-θ0‖² log(2ω) / (4α²) + log(m/α) + 10  /  ‖θ‖²
(50/51)
alpha, alpha_weighted, log_norm,      heavy-tailed self-regularization summaries: the means of
log_spectral_norm, stable_rank        :func:`deepscope.spectra` (Martin & Mahoney, JMLR 2021)
====================================  =========================================================

A measure whose ingredient is missing (``init_params`` not given, a regression task, γ ≤ 0,
a non-ReLU network for the path norm, no layer large enough for a power-law fit) is left out
of the table and summary and listed with the reason in ``settings["omitted"]``; it is never
filled with a guess.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._params import check_input_dtype, eval_mode
from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, ModelError, ShapeError, unknown_name
from deepscope.generalization.bn_fold import fold_batchnorm, layer_matrices
from deepscope.generalization.flatness import (MAG_EPS, NoiseEvaluator, check_labels,
                                               pacbayes_sigma, sharpness_alpha)
from deepscope.generalization.norms import PATH_NORM_MODULES, layer_norm_table, path_norm
from deepscope.result import Result
from deepscope._precision import ieee_float32

__all__ = ["measures", "MeasuresResult", "MEASURES", "output_margins", "COLUMNS"]

COLUMNS = ("measure", "value", "family", "note")

#: name -> (family, needs); needs ⊆ {"init", "margin", "labels"}
MEASURES: dict[str, tuple[str, frozenset]] = {}


def _reg(family: str, names: str, needs: tuple[str, ...] = ()) -> None:
    for n in names.split():
        MEASURES[n] = (family, frozenset(needs))


_reg("margin", "output_margin", ("labels",))
_reg("margin", "inverse_margin", ("labels", "margin"))
_reg("vc", "params")
_reg("spectral", "log_prod_of_spec log_sum_of_spec fro_over_spec")
_reg("spectral", "log_prod_of_spec_over_margin log_sum_of_spec_over_margin log_spec_orig_main",
     ("labels", "margin"))
_reg("spectral", "log_spec_init_main", ("labels", "margin", "init"))
_reg("frobenius", "log_prod_of_fro log_sum_of_fro param_norm")
_reg("frobenius", "log_prod_of_fro_over_margin log_sum_of_fro_over_margin", ("labels", "margin"))
_reg("distance", "fro_dist dist_spec_init dist_from_init", ("init",))
_reg("path", "path_norm")
_reg("path", "path_norm_over_margin", ("labels", "margin"))
_reg("pacbayes", "pacbayes_sigma pacbayes_flatness pacbayes_orig", ("labels",))
_reg("pacbayes", "pacbayes_init", ("labels", "init"))
_reg("pacbayes-mag", "pacbayes_mag_sigma pacbayes_mag_flatness pacbayes_mag_orig", ("labels",))
_reg("pacbayes-mag", "pacbayes_mag_init", ("labels", "init"))
_reg("sharpness", "sharpness_alpha sharpness_flatness sharpness_orig", ("labels",))
_reg("sharpness", "sharpness_init", ("labels", "init"))
_reg("ht-sr", "alpha alpha_weighted log_norm log_spectral_norm stable_rank")

_NORM_FAMILIES = ("spectral", "frobenius", "distance")

# search budgets (the paper's: 15 bisection steps, 10 Monte-Carlo draws, target drop 0.1)
SEARCH_DEPTH = 15
MC_DRAWS = 10
TARGET_DROP = 0.1
SIGMA_MAX = 2.0
SHARPNESS_DEPTH = 12
ASCENT_STEPS = 10


@dataclass(repr=False)
class MeasuresResult(Result):
    """:class:`~deepscope.result.Result` of :func:`measures`; ``layers`` holds the per-layer
    (BatchNorm-folded) norms and distances from initialization."""

    layers: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        from deepscope.result import _jsonable
        out["layers"] = _jsonable(self.layers.to_dict(orient="records"))
        return out


def _which(which) -> list[str]:
    if which is None:
        return list(MEASURES)
    if isinstance(which, str):
        which = [w.strip() for w in which.split(",") if w.strip()]
    which = list(dict.fromkeys(which))
    for w in which:
        if w not in MEASURES:
            raise unknown_name("measure", w, MEASURES)
    if not which:
        raise ConfigError("which must name at least one measure, got an empty list")
    return which


def output_margins(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024
                   ) -> np.ndarray:
    """``f_y(x) - max_{j≠y} f_j(x)`` per sample (eval mode; the model is not modified)."""
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            f = model(x[i:i + batch_size]).double()
            if f.dim() != 2 or f.shape[1] < 2:
                raise ShapeError(f"output margin needs logits of shape (N, classes >= 2), "
                                 f"got {tuple(f.shape)}")
            yb = y[i:i + batch_size]
            check_labels(yb, f.shape[1])
            true = f.gather(1, yb[:, None])[:, 0]
            other = f.scatter(1, yb[:, None], float("-inf")).max(1).values
            out.append((true - other).cpu())
    return torch.cat(out).numpy()


def _init_model(model: nn.Module, init_params) -> nn.Module:
    names = dict(model.named_parameters())
    state = dict(init_params)
    missing = [n for n in names if n not in state]
    if missing:
        raise ShapeError(f"init_params must hold every parameter of the model: missing "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    init = copy.deepcopy(model)
    for m in init.modules():  # initial BatchNorm statistics, unless given
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
    own = init.state_dict()
    for k, v in state.items():
        if k not in own:
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            raise ShapeError(f"init_params[{k!r}] has shape {tuple(v.shape)}, the model's "
                             f"parameter {tuple(own[k].shape)}")
        own[k] = v.detach().to(own[k].device, own[k].dtype)
    init.load_state_dict(own)
    return init.eval()


class _Context:
    """Lazily computed ingredients shared by several measures."""

    def __init__(self, model, x, y, task, init_params, m, seed, batch_size, progress):
        self.model, self.x, self.y, self.task = model, x, y, task
        self.m, self.seed, self.batch_size, self.progress = m, seed, batch_size, progress
        self.init = _init_model(model, init_params) if init_params is not None else None
        self.theta = torch.cat([p.detach().reshape(-1).double()
                                for p in model.parameters()])
        self.theta0 = None if self.init is None else torch.cat(
            [p.detach().reshape(-1).double() for p in self.init.parameters()])
        self._cache: dict[str, Any] = {}
        self.notes: dict[str, str] = {}

    def example(self) -> Tensor:
        return self.x[:min(64, self.x.shape[0])]

    def folded(self):
        if "folded" not in self._cache:
            self._cache["folded"] = fold_batchnorm(self.model, self.example())
        return self._cache["folded"]

    def layers(self) -> pd.DataFrame:
        if "layers" not in self._cache:
            f = self.folded()
            mats = layer_matrices(f.weights)
            init = None
            if self.init is not None:
                init = layer_matrices(fold_batchnorm(self.init, self.example()).weights)
            t = layer_norm_table(mats, init)
            bn = {layer: b for b, layer, _ in f.folds}
            t.insert(1, "folded_batchnorm", [", ".join(k for k, v in bn.items() if v == n)
                                             if n in bn.values() else "" for n in t["layer"]])
            self._cache["layers"] = t
        return self._cache["layers"]

    def margin(self) -> float:
        if "margin" not in self._cache:
            mg = output_margins(self.model, self.x, self.y, batch_size=self.batch_size)
            self._cache["margin"] = float(np.percentile(mg, 10))
        return self._cache["margin"]

    def evaluator(self) -> NoiseEvaluator:
        if "ev" not in self._cache:
            self._cache["ev"] = NoiseEvaluator(self.model, self.x, self.y,
                                               batch_size=self.batch_size)
        return self._cache["ev"]

    def search(self, kind: str):
        if kind not in self._cache:
            ev = self.evaluator()
            if kind == "pacbayes":
                r = pacbayes_sigma(ev, depth=SEARCH_DEPTH, draws=MC_DRAWS, target=TARGET_DROP,
                                   hi=SIGMA_MAX, seed=self.seed, progress=self.progress)
            elif kind == "pacbayes-mag":
                r = pacbayes_sigma(ev, magnitude_eps=MAG_EPS, depth=SEARCH_DEPTH,
                                   draws=MC_DRAWS, target=TARGET_DROP, hi=SIGMA_MAX,
                                   seed=self.seed, progress=self.progress)
            else:
                r = sharpness_alpha(ev, depth=SHARPNESS_DEPTH, steps=ASCENT_STEPS,
                                    target=TARGET_DROP, hi=SIGMA_MAX, progress=self.progress)
            self._cache[kind] = r
        return self._cache[kind]

    def spectra_summary(self) -> dict:
        if "spectra" not in self._cache:
            from deepscope.weights.probe import spectra
            self._cache["spectra"] = spectra(self.model, progress=False).summary
        return self._cache["spectra"]


def _safe_log(v: float) -> float:
    return math.log(v) if v > 0 else -math.inf


def _family_values(fam: str, ctx: _Context, names: list[str]) -> dict[str, tuple[float, str]]:
    """Compute the requested measures of one family: name -> (value, note)."""
    out: dict[str, tuple[float, str]] = {}
    gamma = ctx.margin() if any("margin" in MEASURES[n][1] or n == "output_margin"
                                for n in names) else None
    if fam == "margin":
        if "output_margin" in names:
            out["output_margin"] = (gamma, "10th percentile of f_y - max_{j≠y} f_j (train)")
        if "inverse_margin" in names:
            out["inverse_margin"] = (1.0 / gamma ** 2, "1/γ²")
    elif fam == "vc":
        out["params"] = (float(ctx.theta.numel()), "number of parameters ω")
    elif fam in _NORM_FAMILIES:
        t = ctx.layers()
        d = len(t)
        spec2 = t["spectral_norm"].to_numpy() ** 2
        fro2 = t["frobenius_norm"].to_numpy() ** 2
        if d == 0:
            for n in names:
                ctx.notes[n] = "the model has no Linear/Conv layer"
            return out
        with np.errstate(divide="ignore", invalid="ignore"):
            lps = float(np.sum(np.log(spec2)))
            lpf = float(np.sum(np.log(fro2)))
            ratio = float(np.sum(fro2 / spec2))
        note = f"{d} folded layer matrices (conv: reshaped kernel)"
        vals = {"log_prod_of_spec": lps, "log_sum_of_spec": math.log(d) + lps / d,
                "fro_over_spec": ratio,
                "log_prod_of_fro": lpf, "log_sum_of_fro": math.log(d) + lpf / d,
                "param_norm": float(np.sum(fro2))}
        if gamma is not None:
            lg = 2 * _safe_log(gamma)
            vals.update({
                "log_prod_of_spec_over_margin": lps - lg,
                "log_sum_of_spec_over_margin": math.log(d) + (lps - lg) / d,
                "log_spec_orig_main": lps - lg + _safe_log(ratio) if ratio == ratio
                else math.nan,
                "log_prod_of_fro_over_margin": lpf - lg,
                "log_sum_of_fro_over_margin": math.log(d) + (lpf - lg) / d})
        if ctx.init is not None:
            dfro2 = t["dist_frobenius"].to_numpy() ** 2
            dspec2 = t["dist_spectral"].to_numpy() ** 2
            vals.update({"fro_dist": float(np.sum(dfro2)),
                         "dist_spec_init": float(np.sum(dspec2)),
                         "dist_from_init": float((ctx.theta - ctx.theta0).norm())})
            if gamma is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r0 = float(np.sum(dfro2 / spec2))
                vals["log_spec_init_main"] = (lps - 2 * _safe_log(gamma) + _safe_log(r0)
                                              if r0 == r0 else math.nan)
        for n in names:
            nt = "all parameters, unfolded" if n == "dist_from_init" else note
            out[n] = (vals[n], nt)
    elif fam == "path":
        f = ctx.folded()
        bad = sorted({type(m).__name__ for m in f.model.modules()
                      if not list(m.children()) and not isinstance(m, PATH_NORM_MODULES)})
        if bad:
            for n in names:
                ctx.notes[n] = (f"path norm needs a ReLU network of Linear/Conv/pooling "
                                f"layers; found {', '.join(bad)}")
            return out
        shape = tuple(ctx.x.shape[1:])
        pn = path_norm(f.model, shape)
        if "path_norm" in names:
            out["path_norm"] = (pn, "folded net, squared parameters, all-ones input")
        if "path_norm_over_margin" in names:
            out["path_norm_over_margin"] = (pn / gamma ** 2, "path_norm / γ²")
    elif fam in ("pacbayes", "pacbayes-mag", "sharpness"):
        r = ctx.search(fam)
        s = r.value
        omega = ctx.theta.numel()
        budget = (f"{SEARCH_DEPTH} bisection steps x {MC_DRAWS} draws" if fam != "sharpness"
                  else f"{SHARPNESS_DEPTH} bisection steps x {ASCENT_STEPS} ascent steps")
        edge = " (search hit its upper end)" if r.hit_upper_end else ""
        inv = 1.0 / s ** 2 if s > 0 else math.inf
        logm = math.log(ctx.m / s) if s > 0 else math.inf
        w2 = float((ctx.theta ** 2).sum())
        d2 = float(((ctx.theta - ctx.theta0) ** 2).sum()) if ctx.init is not None else None
        prefix = {"pacbayes": "pacbayes", "pacbayes-mag": "pacbayes_mag",
                  "sharpness": "sharpness"}[fam]
        sym = "α" if fam == "sharpness" else ("σ'" if fam == "pacbayes-mag" else "σ")
        vals = {f"{prefix}_{'alpha' if fam == 'sharpness' else 'sigma'}": s,
                f"{prefix}_flatness": inv}
        if fam == "pacbayes":
            vals["pacbayes_orig"] = w2 / (4 * s ** 2) + logm + 10 if s > 0 else math.inf
            if d2 is not None:
                vals["pacbayes_init"] = d2 / (4 * s ** 2) + logm + 10 if s > 0 else math.inf
        elif fam == "sharpness":
            c = math.log(2 * omega)
            vals["sharpness_orig"] = w2 * c / (4 * s ** 2) + logm + 10 if s > 0 else math.inf
            if d2 is not None:
                vals["sharpness_init"] = d2 * c / (4 * s ** 2) + logm + 10 if s > 0 \
                    else math.inf
        else:
            eps2 = MAG_EPS ** 2

            def mag(ref: Tensor) -> float:
                num = eps2 + (s ** 2 + 1) * float((ref ** 2).sum()) / omega
                den = eps2 + s ** 2 * ref ** 2
                return 0.25 * float(torch.log(num / den).sum()) + logm + 10
            vals["pacbayes_mag_orig"] = mag(ctx.theta)
            if ctx.init is not None:
                vals["pacbayes_mag_init"] = mag(ctx.theta - ctx.theta0)
        for n in names:
            if n in vals:
                out[n] = (vals[n], f"{sym}={s:.4g}, {budget}{edge}")
    elif fam == "ht-sr":
        sm = ctx.spectra_summary()
        for n in names:
            v = float(sm.get(n, math.nan))
            if math.isfinite(v):
                out[n] = (v, f"mean over {sm.get('num_fitted', 0)} fitted layers")
            else:
                ctx.notes[n] = "no layer of deepscope.spectra could be fitted"
    return out


@ieee_float32
def measures(model: nn.Module, data, *, init_params: dict[str, Tensor] | None = None,
             which=None, seed: int = 0, batch_size: int = 1024,
             max_samples: int | None = None, progress: bool = True) -> MeasuresResult:
    """Generalization measures of Jiang et al. (ICLR 2020) for a trained classifier.

    Args:
        model: the trained network (not modified; eval mode is used throughout).
        data: a deepscope ``Dataset`` (its train split) or an ``(x, y)`` tuple.
        init_params: the initial parameters (``name -> tensor``; BatchNorm statistics are
            taken as at initialization unless included); measures that need them are
            omitted without.
        which: a subset of :data:`MEASURES` (names, or a comma-separated string); all by
            default.
        seed: seeds the ``max_samples`` subset and the Monte-Carlo draws.
        batch_size: samples per forward pass.
        max_samples: a random subset of the training data (margin, flatness, sharpness);
            ``m`` in the bounds stays the full training-set size.
        progress: progress bars on stderr.

    Returns:
        :class:`MeasuresResult`: ``table`` with columns ``measure, value, family, note``;
        ``summary`` = {measure: value}; ``settings`` with the budgets and
        ``omitted`` = {measure: reason}; ``layers`` per folded layer.
    """
    from deepscope.curvature.operators import prepare_data
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise ModelError("model has no parameters: expected a trained network")
    for name, val in (("batch_size", batch_size),):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {val!r}")
    names = _which(which)
    x_full, _, _ = prepare_data(data)
    m = int(x_full.shape[0])
    x, y, task = prepare_data(data, max_samples=max_samples, seed=seed)
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ModelError(f"the model has non-finite (NaN/inf) parameters in "
                         f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}: expected a "
                         "trained network with finite weights")
    first = next(model.parameters())
    dev = first.device
    check_input_dtype(model, x)
    # inputs in the model's floating dtype (e.g. a float64 model fed a float32 dataset)
    x = x.to(dev, first.dtype) if x.is_floating_point() and first.is_floating_point() \
        else x.to(dev)
    y = y.to(dev)
    work = copy.deepcopy(model).eval()  # dropout off, BatchNorm running statistics

    ctx = _Context(work, x, y, task, init_params, m, seed, batch_size, progress)
    omitted: dict[str, str] = {}
    todo: dict[str, list[str]] = {}
    for n in names:
        fam, needs = MEASURES[n]
        if "labels" in needs and task != "classification":
            omitted[n] = "needs a classification task (labels and accuracy)"
        elif "init" in needs and ctx.init is None:
            omitted[n] = "needs init_params (the initial weights)"
        else:
            todo.setdefault(fam, []).append(n)
    if any("margin" in MEASURES[n][1] for f in todo.values() for n in f):
        g = ctx.margin()
        if not g > 0:
            for f in list(todo):
                keep = [n for n in todo[f] if "margin" not in MEASURES[n][1]]
                for n in todo[f]:
                    if n not in keep:
                        omitted[n] = (f"output margin γ = {g:.4g} ≤ 0 (more than 10% of the "
                                      "training points misclassified)")
                todo[f] = keep
    values: dict[str, tuple[float, str]] = {}
    for fam in progress_bar(list(todo), enabled=progress, desc="measures"):
        if not todo[fam]:
            continue
        try:
            values.update(_family_values(fam, ctx, todo[fam]))
        except ModelError as e:  # BatchNorm that cannot be folded: no norm measure, no guess
            if fam not in (*_NORM_FAMILIES, "path"):
                raise
            for n in todo[fam]:
                ctx.notes[n] = f"BatchNorm folding failed: {e}"
    layers_note = ""
    try:
        layers = ctx.layers()
    except ModelError as e:
        layers, layers_note = pd.DataFrame(), f"BatchNorm folding failed: {e}"
    omitted.update(ctx.notes)
    for n in list(values):
        if math.isnan(values[n][0]):  # e.g. 0/0 for an all-zero layer: undefined, not guessed
            omitted[n] = f"undefined (NaN): {values.pop(n)[1]}"
    rows = [{"measure": n, "value": float(values[n][0]), "family": MEASURES[n][0],
             "note": values[n][1]} for n in names if n in values]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    summary = {r["measure"]: r["value"] for r in rows}
    settings = {"num_samples": int(x.shape[0]), "m": m, "seed": seed,
                "batch_size": batch_size, "max_samples": max_samples, "task": task,
                "init_given": ctx.init is not None, "which": names,
                "pacbayes": {"depth": SEARCH_DEPTH, "draws": MC_DRAWS, "target_drop": TARGET_DROP,
                             "sigma_max": SIGMA_MAX, "magnitude_eps": MAG_EPS},
                "sharpness": {"depth": SHARPNESS_DEPTH, "ascent_steps": ASCENT_STEPS,
                              "box": "|u_i| <= alpha", "target_drop": TARGET_DROP},
                "conv_spectral_norm": "reshaped kernel (C_out, C_in*k...)",
                "omitted": omitted}
    if layers_note:
        settings["layers_note"] = layers_note
    if "folded" in ctx._cache:
        settings["batchnorm_folds"] = [list(f) for f in ctx.folded().folds]
    return MeasuresResult(kind="measures", table=table, summary=summary, settings=settings,
                          layers=layers)
