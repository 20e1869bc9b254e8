"""Flatness measures of Jiang et al. (ICLR 2020, section 3 and appendix C.4 / C.5).

- PAC-Bayes flatness (their Algorithm 1): the largest ``σ`` in ``[0, hi]`` (bisection,
  ``depth`` steps) such that adding ``u ~ N(0, σ² I)`` to every parameter lowers the training
  accuracy by at most ``target`` (0.1), the accuracy under noise being the mean over
  ``draws`` Monte-Carlo draws. Magnitude-aware variant: ``u_i ~ N(0, σ'² w_i² + ε²)``.
  The draws are common random numbers: draw ``k`` is ``σ·z_k`` (or ``z_k·sqrt(σ²w²+ε²)``)
  with the same seeded standard normal ``z_k`` at every ``σ``, so the estimated drop is a
  smooth function of ``σ`` and the search is reproducible from ``seed``.
- Sharpness (their Algorithm 2): the largest ``α`` such that the worst-case perturbation in
  the box ``|u_i| ≤ α`` (every coordinate, as in their eqs. 50-53 and Algorithm 2), found by
  ``steps`` of projected (sign-)gradient ascent on the training cross-entropy, lowers the
  training accuracy by at most ``target``. (Keskar et al. 2017 scale the box by
  ``|w_i| + 1``; Jiang et al.'s magnitude-aware variant by ``|w_i| + ε`` — not implemented.)

The one-sided drop ``acc(w) - acc(w + u)`` is used (the paper's deviation ``|·|``; noise
essentially never raises the training accuracy by 0.1). All evaluations are in eval mode with
BatchNorm running statistics kept; every parameter (BatchNorm affine ones included) is
perturbed. The model is never modified: parameters are substituted with
:func:`torch.func.functional_call` on a private copy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepscope._params import buffers_of, functional_forward, params_of
from deepscope._progress import progress_bar
from deepscope.errors import ShapeError

__all__ = ["check_labels", "NoiseEvaluator", "SearchResult", "accuracy_drop", "pacbayes_sigma",
           "worst_case_ascent", "sharpness_alpha", "MAG_EPS"]

#: ε of the magnitude-aware perturbation (Jiang et al. use 1e-3)
MAG_EPS = 1e-3


def check_labels(y: Tensor, k: int) -> None:
    """ShapeError unless every class label lies in ``[0, k)`` (k = number of logits)."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ShapeError(f"class labels must lie in [0, {k}) for a model with {k} outputs, "
                         f"got labels in [{int(y.min())}, {int(y.max())}]")


class NoiseEvaluator:
    """Accuracy / loss of ``model`` at perturbed parameters on a fixed training set."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = params_of(self.model)
        self.buffers = buffers_of(self.model)
        dev = next(iter(self.params.values())).device
        self.device = dev
        self.x, self.y = x.to(dev), y.to(dev)
        self.batch_size = int(batch_size)
        self.clean_accuracy = self.accuracy(self.params)

    def _batches(self):
        n = self.x.shape[0]
        for i in range(0, n, self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]

    @torch.no_grad()
    def accuracy(self, params: dict[str, Tensor]) -> float:
        correct = 0
        for xb, yb in self._batches():
            out = functional_forward(self.model, params, xb, buffers=self.buffers)
            check_labels(yb, out.shape[1])  # else out-of-range labels just count as wrong
            correct += int((out.argmax(1) == yb).sum())
        return correct / self.x.shape[0]

    def loss_and_grad(self, params: dict[str, Tensor]) -> tuple[float, dict[str, Tensor]]:
        """Mean cross-entropy over the set and its gradient in ``params``."""
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        total = 0.0
        grads = {k: torch.zeros_like(v) for k, v in leaves.items()}
        n = self.x.shape[0]
        for xb, yb in self._batches():
            out = functional_forward(self.model, leaves, xb, buffers=self.buffers)
            loss = F.cross_entropy(out, yb, reduction="sum")
            g = torch.autograd.grad(loss, list(leaves.values()))
            for k, gk in zip(leaves, g):
                grads[k] += gk / n
            total += float(loss.detach())  # summed as in loss(), so both agree exactly
        return total / n, grads

    @torch.no_grad()
    def loss(self, params: dict[str, Tensor]) -> float:
        total = 0.0
        for xb, yb in self._batches():
            out = functional_forward(self.model, params, xb, buffers=self.buffers)
            total += float(F.cross_entropy(out, yb, reduction="sum"))
        return total / self.x.shape[0]


def _normal_draw(params: dict[str, Tensor], seed: int, k: int) -> dict[str, Tensor]:
    """Standard normal tensors for draw ``k``, from a CPU generator (same on every device)."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + 7919 * (k + 1)) % (2 ** 62))
    return {n: torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.device, v.dtype)
            for n, v in params.items()}


def accuracy_drop(ev: NoiseEvaluator, sigma: float, *, draws: int = 10, seed: int = 0,
                  magnitude_eps: float | None = None) -> float:
    """``acc(w) - mean_k acc(w + u_k)``, ``u_k = σ z_k`` or ``z_k sqrt(σ² w² + ε²)``."""
    accs = []
    for k in range(draws):
        z = _normal_draw(ev.params, seed, k)
        if magnitude_eps is None:
            noisy = {n: w + sigma * z[n] for n, w in ev.params.items()}
        else:
            noisy = {n: w + z[n] * torch.sqrt(sigma ** 2 * w ** 2 + magnitude_eps ** 2)
                     for n, w in ev.params.items()}
        accs.append(ev.accuracy(noisy))
    return ev.clean_accuracy - sum(accs) / len(accs)


@dataclass
class SearchResult:
    """Outcome of a bisection: ``value`` (σ or α) is the largest tested value whose accuracy
    drop was ≤ target (0 if none), ``upper`` the smallest tested one above the target (``hi``
    if none: the search hit the end of its range)."""

    value: float
    upper: float
    drop_at_value: float
    drop_at_upper: float
    clean_accuracy: float
    steps: list[tuple[float, float]] = field(default_factory=list)

    @property
    def hit_upper_end(self) -> bool:
        return self.drop_at_upper != self.drop_at_upper  # NaN: never exceeded


def _bisect(drop_fn, *, hi: float, depth: int, target: float, clean: float,
            progress: bool, desc: str) -> SearchResult:
    lo, up = 0.0, float(hi)
    d_lo, d_up = 0.0, float("nan")
    steps = []
    for _ in progress_bar(range(depth), enabled=progress, desc=desc):
        mid = 0.5 * (lo + up)
        d = float(drop_fn(mid))
        steps.append((mid, d))
        if d <= target:
            lo, d_lo = mid, d
        else:
            up, d_up = mid, d
    return SearchResult(value=lo, upper=up, drop_at_value=d_lo, drop_at_upper=d_up,
                        clean_accuracy=clean, steps=steps)


def pacbayes_sigma(ev: NoiseEvaluator, *, magnitude_eps: float | None = None,
                   depth: int = 15, draws: int = 10, target: float = 0.1, hi: float = 2.0,
                   seed: int = 0, progress: bool = False) -> SearchResult:
    """Largest σ in ``[0, hi]`` whose Monte-Carlo accuracy drop is ≤ ``target``."""
    return _bisect(lambda s: accuracy_drop(ev, s, draws=draws, seed=seed,
                                           magnitude_eps=magnitude_eps),
                   hi=hi, depth=depth, target=target, clean=ev.clean_accuracy,
                   progress=progress,
                   desc="pac-bayes σ" if magnitude_eps is None else "pac-bayes mag σ")


@dataclass
class Ascent:
    """Worst case found in the box: loss increase, the perturbation, the accuracy there."""

    increase: float
    perturbation: dict[str, Tensor]
    accuracy: float
    radius: dict[str, Tensor]


def worst_case_ascent(ev: NoiseEvaluator, alpha: float, *, steps: int = 10) -> Ascent:
    """Projected sign-gradient ascent of the training cross-entropy over the box
    ``|u_i| ≤ α``, from ``u = 0`` with step ``2.5 α / steps`` (the usual
    PGD step for an ℓ∞ box). Returns the best iterate (so the increase is ≥ 0)."""
    w = ev.params
    radius = {n: torch.full_like(v, alpha) for n, v in w.items()}
    u = {n: torch.zeros_like(v) for n, v in w.items()}
    base = ev.loss(w)
    best_inc, best_u = 0.0, {n: t.clone() for n, t in u.items()}
    for t in range(steps + 1):
        if t < steps:
            loss, g = ev.loss_and_grad({n: w[n] + u[n] for n in w})
        else:
            loss = ev.loss({n: w[n] + u[n] for n in w})
        if loss - base > best_inc:
            best_inc, best_u = loss - base, {n: v.clone() for n, v in u.items()}
        if t < steps:
            u = {n: torch.maximum(torch.minimum(u[n] + 2.5 / steps * radius[n] * g[n].sign(),
                                                radius[n]), -radius[n]) for n in w}
    acc = ev.accuracy({n: w[n] + best_u[n] for n in w})
    return Ascent(increase=best_inc, perturbation=best_u, accuracy=acc, radius=radius)


def sharpness_alpha(ev: NoiseEvaluator, *, depth: int = 15, steps: int = 10,
                    target: float = 0.1, hi: float = 2.0, progress: bool = False
                    ) -> SearchResult:
    """Largest α in ``[0, hi]`` whose worst-case (ascent) accuracy drop is ≤ ``target``."""
    return _bisect(lambda a: ev.clean_accuracy - worst_case_ascent(ev, a, steps=steps).accuracy,
                   hi=hi, depth=depth, target=target, clean=ev.clean_accuracy,
                   progress=progress, desc="sharpness α")
