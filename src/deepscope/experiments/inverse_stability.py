"""Inverse stability of the realization map of shallow ReLU nets (Berner, Elbrächter, Grohs
et al., "How degenerate is the parametrization of neural networks with the ReLU activation
function?", NeurIPS 2019).

Question: if two nets compute nearly the same function, are their parameters close (modulo
the permutation and rescaling symmetries)? I.e. does d_param <= C · d_real^β hold?

Protocol (defaults finish in well under a minute on 2 CPU cores):

1. Data: the ``teacher`` regression task (2-d Gaussian inputs, a random 4-neuron ReLU
   teacher), 256 training points, targets scaled to unit variance (so the trained outer
   and inner weights have comparable sizes). Domain Ω = [-2, 2]² (grid of ``samples``
   points).
2. Trained pairs (nearby solutions): for each of ``bases`` initial seeds, a one-hidden-layer
   ReLU MLP of ``width`` neurons (deepscope MLP, float64) is trained with mini-batch Adam
   (MSE) → net A. Partners B: (i) ``"seed"``: the same initialization trained with another
   mini-batch order; (ii) ``"perturb"``: A plus Gaussian noise of relative size σ (for every
   σ in ``perturbations``: ‖noise‖ = σ‖θ_A‖) retrained for ``retrain_epochs`` at the
   learning rate ``retrain_lr`` (default lr/100, so the retrained net stays near A).
3. Each pair: parameter distance modulo symmetries (and raw), realization distances sup and
   Sobolev W^{1,∞} on Ω (:func:`deepscope.realization.probe.realization`).
4. Fit of the upper envelope (:func:`envelope_fit`) in log-log coordinates
   u = log d_real, v = log d_param: the line v = log C + β u lying above every trained pair
   that is lowest at the mean of u (a linear program; the line supports the upper convex
   hull of the points; β >= 0 is imposed). Then d_param <= C d_real^β holds for every
   trained pair, and C, β are the tightest such constants in that sense. Fitted by default
   on the sup distance (``fit_on="sup"``); the Sobolev fit and the raw-parameter fit are
   reported too. Why not W^{1,∞} by default: between two nearby trained nets the gradient
   difference jumps by |a_k|‖w_k‖ on the thin band between a kink and its slightly moved
   copy, so the measured sup of the gradient difference stays O(1) however close the pair
   is (e.g. ≈ 1.1 at relative perturbation 1e-3 with the defaults): W^{1,∞}-closeness
   implies parameter closeness in the theorem, but nearby parameters are not W^{1,∞}-close,
   and the trained pairs then span too narrow a range of Sobolev distances to fit β.
5. Injected pathologies, applied to each net A with each ``strength`` s; each keeps the
   realization on Ω fixed (exactly, or up to a tiny amount) while the parameters move:

   - ``opposite``: α = s; neurons α ReLU(z), −α ReLU(−z) (opposite directions: together the
     affine α z, z = u·x − t through Ω) and −α ReLU(u·x + T) (active on all of Ω, so it is
     affine there too), c += α (t + T): the sum vanishes on Ω;
   - ``parallel``: the largest neuron k is split into (v_k, (1+s) a_k) and
     (1.5 v_k, −s a_k / 1.5): same function, parallel directions;
   - ``vanishing_outer``: a new neuron with a vanishing outer weight ε = 1e-4 max_k‖a_k‖/s
     and huge inner weights M (u, −t), M = s/ε, whose kink u·x = t lies a distance
     δ = 1e-8/s inside the corner of Ω that maximizes u·x: it changes f by at most
     εMδ = 1e-8 in sup norm, while its balanced magnitude sqrt(εM‖(u, −t)‖) grows like √s.
     Its gradient εM u = s u on that sliver is not small: the W^{1,∞} distance sees it
     (this is why the theorem is stated in a Sobolev norm);
   - ``unbalanced``: every neuron rescaled, (w_k, b_k) · s^{r_k}, a_k / s^{r_k},
     r_k ~ U(−1, 1): same function;
   - ``dead``: a new neuron s (u, −T) with outer weight s, T > max_Ω u·x: never active on Ω.

   For each: the ratio d_param / (C d_real^β) (> 1: the bound is broken, unless d_param is
   at round-off level, below 1e-9 relative to ‖θ_A‖), the same for the
   raw distance against the raw fit, and whether :func:`~deepscope.realization.
   pathologies.detect_pathologies` flags the injection: a finding of the injected kind on
   a neuron (pair) not flagged with that kind in A, or, for ``unbalanced``, a largest
   imbalance |log(‖a_k‖/‖v_k‖)| at least log 2 beyond A's (``detector_value``: the first
   new finding's quantity; for ``unbalanced`` the most extreme ratio).
   Expected: all but ``unbalanced`` break the bound modulo symmetries, and the break grows
   with s; ``unbalanced`` only breaks the raw bound (balancing removes it), as in the paper.

Measured with the defaults (``deepscope experiment inverse-stability``, 24 trained pairs,
~30 s on 2 shared cores): envelope d_param <= 1.28 · sup^0.30 over all trained pairs
(least-squares slope 0.96); perturbation pairs alone C = 1.27, β = 0.75; the different-
batch-order pairs sit highest (parameters ~0.15-0.6 apart at sup distances ~0.03-0.14:
distinct but functionally close solutions). Every injection is detected; opposite,
parallel, vanishing_outer and dead break the bound by factors 1e3 to 1e8, growing with s;
unbalanced leaves the distance modulo symmetries at round-off (ratio ~1e-11) and breaks
only the raw bound.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linprog

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError
from deepscope.realization.pathologies import detect_pathologies
from deepscope.realization.probe import realization
from deepscope.realization.shallow import ShallowReLU, extract_shallow
from deepscope.result import Result

__all__ = ["inverse_stability_study", "envelope_fit", "inject_pathology", "INJECTIONS",
           "STUDY_COLUMNS"]

INJECTIONS = ("opposite", "parallel", "vanishing_outer", "unbalanced", "dead")
#: Table columns, in order.
STUDY_COLUMNS = ("group", "kind", "base", "strength", "param_distance", "param_distance_raw",
                 "sup", "grad_sup", "sobolev", "ratio", "breaks_bound", "ratio_raw",
                 "breaks_bound_raw", "detected", "findings", "detector_value")
_FLOOR = 1e-300


def envelope_fit(real, param) -> dict:
    """Upper-envelope fit param <= C · real^β in log-log coordinates.

    With u_i = log real_i and v_i = log param_i (pairs with real_i, param_i > 0), solve the
    linear program  min_{a, β>=0} Σ_i (a + β u_i − v_i)  s.t.  a + β u_i >= v_i  for all
    i, i.e. the line above every point that is lowest at the mean of u; C = e^a. Returns
    ``{"C", "beta", "num_points", "slope_ls"}`` (``slope_ls``: the ordinary least-squares
    slope of v on u, for comparison). Needs two distinct positive ``real`` values.
    """
    r, p = np.asarray(real, float), np.asarray(param, float)
    ok = (r > 0) & (p > 0) & np.isfinite(r) & np.isfinite(p)
    u, v = np.log(r[ok]), np.log(p[ok])
    if len(np.unique(u)) < 2:
        raise ConfigError(f"the envelope fit needs at least two distinct positive realization "
                          f"distances, got {len(np.unique(u))}")
    n = len(u)
    res = linprog(c=[n, u.sum()], A_ub=np.column_stack([-np.ones(n), -u]), b_ub=-v,
                  bounds=[(None, None), (0, None)], method="highs")
    if not res.success:  # pragma: no cover - bounded and feasible by construction
        raise ConfigError(f"envelope fit failed: {res.message}")
    a, beta = res.x
    a = float(np.max(v - beta * u))  # exact support (removes solver round-off)
    slope = float(np.polyfit(u, v, 1)[0])
    return {"C": math.exp(a), "beta": float(beta), "num_points": int(n), "slope_ls": slope}


def _bound(fit: dict, real: float) -> float:
    return fit["C"] * max(real, _FLOOR) ** fit["beta"]


# ---------------------------------------------------------------------- training

def _train(model: torch.nn.Module, x, y, *, epochs: int, lr: float, batch_size: int,
           seed: int) -> torch.nn.Module:
    """Mini-batch Adam on the MSE, in place on ``model`` (a private float64 copy)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def _perturbed(model: torch.nn.Module, sigma: float, seed: int) -> torch.nn.Module:
    out = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = list(out.parameters())
        norm = torch.sqrt(sum((p ** 2).sum() for p in params))
        noise = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        nn_ = torch.sqrt(sum((z ** 2).sum() for z in noise))
        for p, z in zip(params, noise):
            p.add_(z * (sigma * norm / nn_))
    return out


# ---------------------------------------------------------------------- injections

def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    u = rng.standard_normal(d)
    return u / np.linalg.norm(u)


def _append(net: ShallowReLU, W, b, A, dc=None) -> ShallowReLU:
    t = lambda z: torch.as_tensor(np.asarray(z, float), dtype=torch.float64,  # noqa: E731
                                  device=net.device)
    W, b, A = t(np.atleast_2d(W)), t(np.atleast_1d(b)), t(A).reshape(net.output_dim, -1)
    c = net.c + (t(dc) if dc is not None else 0.0)
    return ShallowReLU(torch.cat([net.W, W]), torch.cat([net.b, b]),
                       torch.cat([net.A, A], dim=1), c, net.input_shape)


def inject_pathology(net, kind: str, strength: float, box, *, seed: int = 0) -> ShallowReLU:
    """Return a copy of ``net`` with one pathology injected (see the module docstring).

    ``box``: the domain as a (d, 2) array-like of [lo, hi] on which the realization is kept
    (exactly, except ``vanishing_outer``: up to 1e-8 in sup norm).
    """
    if kind not in INJECTIONS:
        raise ConfigError(f"unknown pathology {kind!r}: expected one of {', '.join(INJECTIONS)}")
    if not (isinstance(strength, (int, float)) and strength >= 1):
        raise ConfigError(f"strength must be a number >= 1, got {strength!r}")
    net = extract_shallow(net) if not isinstance(net, ShallowReLU) else net
    box = np.asarray(box, float).reshape(net.input_dim, 2)
    rng = np.random.default_rng(seed)
    d, m = net.input_dim, net.output_dim
    lo, hi = box[:, 0], box[:, 1]
    u = _unit(rng, d)
    ux_min = float(np.minimum(u * lo, u * hi).sum())
    ux_max = float(np.maximum(u * lo, u * hi).sum())
    t = float(rng.uniform(0.25, 0.75) * (ux_max - ux_min) + ux_min)  # kink u·x = t inside
    a_dir = _unit(rng, m)
    s = float(strength)
    if kind == "opposite":
        T = -ux_min + 1.0  # u·x + T >= 1 on the box
        W = np.stack([u, -u, u])
        b = np.array([-t, t, T])
        A = np.stack([s * a_dir, -s * a_dir, -s * a_dir], axis=1)
        return _append(net, W, b, A, dc=s * a_dir * (t + T))
    if kind == "parallel":
        V = net.inner.cpu().numpy()
        mag = np.linalg.norm(V, axis=1) * np.linalg.norm(net.A.cpu().numpy(), axis=0)
        k = int(np.argmax(mag))
        lam = 1.5
        A_new = net.A.clone()
        A_new[:, k] = (1 + s) * net.A[:, k]
        base = net.replace(A=A_new)
        return _append(base, lam * net.W[k].cpu().numpy(), lam * float(net.b[k]),
                       -s * net.A[:, k].cpu().numpy() / lam)
    if kind == "vanishing_outer":
        amax = float(torch.linalg.vector_norm(net.A, dim=0).max()) if net.num_neurons else 1.0
        eps = 1e-4 * max(amax, 1e-12) / s
        M = s / eps
        t_edge = ux_max - 1e-8 / s
        return _append(net, M * u, -M * t_edge, eps * a_dir)
    if kind == "unbalanced":
        r = rng.uniform(-1.0, 1.0, size=net.num_neurons)
        sc = torch.as_tensor(s ** r, dtype=torch.float64, device=net.device)
        return ShallowReLU(net.W * sc[:, None], net.b * sc, net.A / sc[None, :], net.c,
                           net.input_shape)
    # dead: s (u, -T) with T > max u·x on the box: never active there
    T = ux_max + 1.0
    return _append(net, s * u, -s * T, s * a_dir)


# ---------------------------------------------------------------------- study

def _check_seq(name: str, vals, low: float) -> list[float]:
    vals = list(vals)
    if not vals or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < low
                       for v in vals):
        raise ConfigError(f"{name} must be a non-empty list of numbers >= {low}, got {vals!r}")
    return [float(v) for v in vals]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def inverse_stability_study(*, input_dim: int = 2, width: int = 16, teacher_width: int = 4,
                            n_train: int = 256, bases: int = 3, seed_pairs: int = 2,
                            perturbations: Sequence[float] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1,
                                                              3e-1),
                            epochs: int = 100, retrain_epochs: int = 10, lr: float = 1e-2,
                            retrain_lr: float | None = None,
                            batch_size: int = 64, domain: tuple[float, float] = (-2.0, 2.0),
                            samples: int = 4096,
                            strengths: Sequence[float] = (10.0, 100.0, 1000.0),
                            injections: Sequence[str] = INJECTIONS, fit_on: str = "sup",
                            seed: int = 0, progress: bool = True) -> Result:
    """Run the study of the module docstring; one table row per pair (``STUDY_COLUMNS``).

    ``summary``: ``fit`` (C, beta on ``fit_on``), ``fit_sup``, ``fit_sobolev``, ``fit_raw``
    (the raw parameter distance against ``fit_on``), per injected kind
    the largest ratio, the fraction of strengths that break the bound (mod symmetries and
    raw) and whether every injection was detected, plus counts and the training loss.
    """
    from deepscope.data import load_dataset
    from deepscope.nets import build_model

    input_dim = _check_int("input_dim", input_dim, 1)
    width = _check_int("width", width, 1)
    bases = _check_int("bases", bases, 1)
    seed_pairs = _check_int("seed_pairs", seed_pairs, 0)
    epochs = _check_int("epochs", epochs, 1)
    retrain_epochs = _check_int("retrain_epochs", retrain_epochs, 0)
    perturbations = _check_seq("perturbations", perturbations, 0.0)
    strengths = _check_seq("strengths", strengths, 1.0)
    bad = [k for k in injections if k not in INJECTIONS]
    if bad:
        raise ConfigError(f"unknown injections {bad}: expected a subset of {INJECTIONS}")
    if fit_on not in ("sobolev", "sup"):
        raise ConfigError(f"fit_on must be 'sobolev' or 'sup', got {fit_on!r}")
    if bases * (seed_pairs + len(perturbations)) < 2:
        raise ConfigError(f"the fit needs at least two trained pairs; bases * (seed_pairs + "
                          f"len(perturbations)) = {bases * (seed_pairs + len(perturbations))}")
    data = load_dataset("teacher", task="regression", input_dim=input_dim,
                        teacher_width=_check_int("teacher_width", teacher_width, 1),
                        n_train=_check_int("n_train", n_train, 2), n_test=16, seed=seed)
    x, y = data.x_train.double(), data.y_train.double()
    y = (y - y.mean()) / y.std().clamp_min(1e-12)
    retrain_lr = lr / 100 if retrain_lr is None else float(retrain_lr)
    box = [tuple(domain)] * input_dim
    arch = {"arch": "mlp", "widths": [width], "activation": "relu",
            "input_shape": [input_dim], "num_outputs": 1}
    kw = dict(epochs=epochs, lr=lr, batch_size=batch_size)

    total = bases * (1 + seed_pairs + len(perturbations) + len(injections) * len(strengths))
    rows, losses, nets_a = [], [], []
    with progress_bar(total=total, enabled=progress, desc="inverse stability",
                      unit="net") as bar:
        for bi in range(bases):
            init = build_model(arch, seed=seed + 1000 * bi).double()
            a = _train(copy.deepcopy(init), x, y, seed=0, **kw)
            with torch.no_grad():
                losses.append(float(torch.nn.functional.mse_loss(a(x), y)))
            nets_a.append(a)
            bar.update(1)
            partners = []
            for j in range(seed_pairs):
                partners.append(("seed", float(j + 1),
                                 _train(copy.deepcopy(init), x, y, seed=j + 1, **kw)))
                bar.update(1)
            for pi, sigma in enumerate(perturbations):
                b = _perturbed(a, sigma, seed=10_000 * (bi + 1) + pi)
                if retrain_epochs:
                    b = _train(b, x, y, epochs=retrain_epochs, lr=retrain_lr,
                               batch_size=batch_size,
                               seed=100 + pi)
                partners.append(("perturb", sigma, b.eval()))
                bar.update(1)
            for kind, strength, b in partners:
                res = realization(a, b, box, samples=samples, seed=seed)
                rows.append(_row("trained", kind, bi, strength, res.summary))
        trained = pd.DataFrame(rows)
        key = "sobolev" if fit_on == "sobolev" else "sup"
        fit = envelope_fit(trained[key], trained["param_distance"])
        fit_sup = envelope_fit(trained["sup"], trained["param_distance"])
        fit_sob = envelope_fit(trained["sobolev"], trained["param_distance"])
        fit_raw = envelope_fit(trained[key], trained["param_distance_raw"])
        fit_kind = {}
        for kind, t in trained.groupby("kind"):
            if t[key].gt(0).sum() >= 2 and t.loc[t[key] > 0, key].nunique() >= 2:
                fit_kind[kind] = envelope_fit(t[key], t["param_distance"])

        for bi, a in enumerate(nets_a):
            net_a = extract_shallow(a)
            base = detect_pathologies(net_a, box).table
            for kind in injections:
                for si, s in enumerate(strengths):
                    b = inject_pathology(net_a, kind, s, box, seed=seed + 7919 * bi + si)
                    res = realization(net_a, b, box, samples=samples, seed=seed)
                    det = detect_pathologies(b, box)
                    row = _row("injected", kind, bi, s, res.summary)
                    found = det.table[det.table["kind"] == kind]
                    row["findings"] = int(len(found))
                    row["detected"], row["detector_value"] = _detected(
                        base[base["kind"] == kind], found, kind)
                    rows.append(row)
                    bar.update(1)

    table = pd.DataFrame(rows)
    r = table[key].to_numpy(float)
    table["ratio"] = table["param_distance"] / np.array([_bound(fit, v) for v in r])
    table["ratio_raw"] = table["param_distance_raw"] / np.array([_bound(fit_raw, v) for v in r])
    # a parameter distance at round-off level (relative 1e-9) is zero: it cannot break a bound
    moved = table["_rel"] > 1e-9
    moved_raw = table["_rel_raw"] > 1e-9
    table["breaks_bound"] = (table["ratio"] > 1 + 1e-9) & moved
    table["breaks_bound_raw"] = (table["ratio_raw"] > 1 + 1e-9) & moved_raw
    for col in ("detected", "findings", "detector_value"):
        if col not in table:
            table[col] = None
    table = table[list(STUDY_COLUMNS)]
    inj = table[table["group"] == "injected"]
    per_kind = {}
    for kind in injections:
        t = inj[inj["kind"] == kind]
        per_kind[kind] = {"max_ratio": float(t["ratio"].max()),
                          "max_ratio_raw": float(t["ratio_raw"].max()),
                          "broken_fraction": float(t["breaks_bound"].mean()),
                          "broken_fraction_raw": float(t["breaks_bound_raw"].mean()),
                          "all_detected": bool(t["detected"].astype(bool).all()),
                          "max_sobolev": float(t["sobolev"].max())}
    tr = table[table["group"] == "trained"]
    summary = {"fit": fit, "fit_sup": fit_sup, "fit_sobolev": fit_sob, "fit_raw": fit_raw, "fit_on": fit_on,
               "fit_by_kind": fit_kind, "num_trained_pairs": int(len(tr)), "num_injected": int(len(inj)),
               "trained_max_ratio": float(tr["ratio"].max()),
               "train_mse": float(np.mean(losses)), "injections": per_kind}
    settings = {"input_dim": input_dim, "width": width, "teacher_width": teacher_width,
                "n_train": n_train, "bases": bases, "seed_pairs": seed_pairs,
                "perturbations": perturbations, "epochs": epochs,
                "retrain_epochs": retrain_epochs, "lr": lr, "retrain_lr": retrain_lr,
                "batch_size": batch_size,
                "domain": list(domain), "samples": samples, "strengths": strengths,
                "injections": list(injections), "fit_on": fit_on, "seed": seed}
    return Result("inverse-stability", table, summary=summary, settings=settings)


def _detected(before: pd.DataFrame, after: pd.DataFrame, kind: str) -> tuple[bool, float]:
    """Whether the detector flags the injection (see the module docstring)."""
    old = set(zip(before["neuron_i"], before["neuron_j"]))
    new = [i for i, key in enumerate(zip(after["neuron_i"], after["neuron_j"]))
           if key not in old]
    if kind == "unbalanced" and len(after):
        sev_a = np.abs(np.log(after["value"].to_numpy(float)))
        sev_b = float(np.abs(np.log(before["value"].to_numpy(float))).max()) \
            if len(before) else 0.0
        worst = int(sev_a.argmax())
        hit = bool(new) or sev_a[worst] >= sev_b + math.log(2.0)
        return hit, float(after["value"].iloc[worst])
    if not new:
        return False, math.nan
    return True, float(after["value"].iloc[new[0]])


def _row(group: str, kind: str, base: int, strength: float, s: dict) -> dict:
    return {"group": group, "kind": kind, "base": base, "strength": strength,
            "param_distance": s["param_distance"],
            "param_distance_raw": s["param_distance_raw"], "sup": s["sup"],
            "grad_sup": s["grad_sup"], "sobolev": s["sobolev"],
            "_rel": s["param_distance_relative"],
            "_rel_raw": s["param_distance_raw"] / max(s["param_norm_a"], 1e-300)}
