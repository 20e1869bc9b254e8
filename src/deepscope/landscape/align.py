"""``deepscope.landscape.align``: permutation alignment of two networks by weight matching.

Hidden units of a layer can be permuted (rows of its weight and bias, BatchNorm entries,
columns of the next layer's weight) without changing the function. Git Re-Basin's weight
matching (Ainsworth, Hayase & Srinivasa, ICLR 2023, Algorithm 1) looks for the permutation π
of ``b``'s units that maximizes

    Σ_ℓ ⟨W_a^ℓ, π(W_b^ℓ)⟩   (equivalently, minimizes ‖θ_a - π(θ_b)‖²)

by coordinate descent over the permutation groups: in a random (seeded) order, each group's
permutation is the linear assignment (:func:`scipy.optimize.linear_sum_assignment`)
maximizing Σ over every parameter touching the group of ⟨W_a, P W_b⟩ with the other groups
held fixed; rounds repeat until no group changes (at most ``max_iter`` rounds). A group only
changes when that strictly raises the objective, so the descent terminates.

Permutation groups (:class:`PermutationSpec`) are built from the module structure:

- ``nn.Sequential`` stacks (deepscope's MLP included, nested Sequentials flattened) of
  Linear / Conv1d / Conv2d / Conv3d, BatchNorm, activations, dropout, pooling and Flatten:
  one group per hidden layer (named after the layer); a Linear after Flatten permutes
  blocks of ``in_features / channels`` columns; the last weight layer's outputs are the
  model's outputs and stay fixed.
- deepscope's CNN (MiniAlexNet): ``features`` then ``classifier`` as one such stack.
- deepscope's ResNet: the residual connections tie the stem's output and every block's
  output in a stage into one group (``residual.k``; a projection shortcut starts a new one),
  and each block's inner channels are a group (``stages.s.b.conv1``). BatchNorm weights,
  biases and running statistics move with their channels.

Anything else raises :class:`~deepscope.errors.ModelError` naming the module.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from deepscope._progress import progress_bar
from deepscope.errors import ConfigError, ModelError
from deepscope.landscape.interpolate import check_same_architecture, resolve_model
from deepscope.landscape.result_paths import ALIGN_COLUMNS, AlignResult
from deepscope._precision import ieee_float32

__all__ = ["align", "permutation_spec", "apply_permutations", "PermutationSpec", "Axis"]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# parameter-free modules that act on every unit alike (commute with unit permutations)
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                nn.AlphaDropout,
                nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


@dataclass(frozen=True)
class Axis:
    """One axis of one state entry that a group permutes; the axis holds ``size * block``
    entries, unit ``i`` owning the contiguous block ``[i * block, (i + 1) * block)``."""

    key: str
    axis: int
    block: int = 1


@dataclass
class PermutationSpec:
    """Permutation groups: ``sizes[g]`` units, permuting every entry of ``axes[g]``."""

    sizes: dict[str, int] = field(default_factory=dict)
    axes: dict[str, list[Axis]] = field(default_factory=dict)

    def by_key(self) -> dict[str, list[tuple[str, Axis]]]:
        out: dict[str, list[tuple[str, Axis]]] = {}
        for g, axes in self.axes.items():
            for ax in axes:
                out.setdefault(ax.key, []).append((g, ax))
        return out


# ------------------------------------------------------------------ building the spec

@dataclass
class _Flow:
    """The activation flowing through the stack: its unit group (None: not permuted),
    number of units, layout (``features``: units on the last axis, ``channels``: on axis 1,
    ``flat``: channels flattened with their positions) and, when flat, the block size."""

    group: str | None = None
    size: int | None = None
    layout: str = "input"
    block: int | None = None


class _Builder:
    def __init__(self, model: nn.Module):
        self.spec = PermutationSpec()
        self.state = model.state_dict()
        self.visited: set[str] = set()

    def group(self, name: str, size: int) -> str:
        self.spec.sizes[name] = size
        self.spec.axes[name] = []
        return name

    def add(self, group: str | None, key: str, axis: int, block: int = 1) -> None:
        if group is None or key not in self.state:
            return
        n = self.state[key].shape[axis]
        if n != self.spec.sizes[group] * block:
            raise ModelError(f"align: {key!r} has {n} entries on axis {axis}, expected "
                             f"{self.spec.sizes[group]} units x {block} of group {group!r}")
        self.spec.axes[group].append(Axis(key, axis, block))

    # -- layers ----------------------------------------------------------------------
    def weight_layer(self, name: str, m: nn.Module, flow: _Flow, out_group: str | None,
                     *, new_group: bool = True) -> _Flow:
        """A Linear/Conv layer reading ``flow``; returns the flow of its outputs.

        ``out_group``: the name of the group of its outputs (a new one when ``new_group``,
        else an existing one), or None for the model's outputs."""
        self.visited.add(name)
        linear = isinstance(m, nn.Linear)
        n_in = m.in_features if linear else m.in_channels
        n_out = m.out_features if linear else m.out_channels
        if not linear and m.groups != 1:
            raise ModelError(f"align: grouped convolution {name!r} (groups={m.groups}) is "
                             f"not supported")
        if flow.group is not None:
            if linear:
                if flow.layout == "channels":
                    raise ModelError(f"align: Linear {name!r} reads a convolution's output "
                                     f"without a Flatten before it")
                block = flow.block if flow.block is not None else n_in // flow.size
                if flow.layout == "features":
                    block = 1
                if n_in != flow.size * block:
                    raise ModelError(f"align: Linear {name!r} has {n_in} inputs, expected a "
                                     f"multiple of the {flow.size} units of {flow.group!r}")
            else:
                if flow.layout != "channels":
                    raise ModelError(f"align: convolution {name!r} reads a "
                                     f"{flow.layout} activation; expected channels")
                block = 1
            self.add(flow.group, f"{name}.weight", 1, block)
        if out_group is not None and new_group:
            self.group(out_group, n_out)
        self.add(out_group, f"{name}.weight", 0)
        self.add(out_group, f"{name}.bias", 0)
        return _Flow(out_group, n_out, "features" if linear else "channels", 1)

    def norm(self, name: str, m: nn.Module, flow: _Flow) -> _Flow:
        self.visited.add(name)
        if flow.group is None:
            return flow
        block = 1
        if flow.layout == "flat":
            block = flow.block if flow.block is not None else m.num_features // flow.size
            flow = _Flow(flow.group, flow.size, "flat", block)
        if m.num_features != flow.size * block:
            raise ModelError(f"align: BatchNorm {name!r} has {m.num_features} features, "
                             f"expected {flow.size} units of {flow.group!r}")
        for p in ("weight", "bias", "running_mean", "running_var"):
            self.add(flow.group, f"{name}.{p}", 0, block)
        return flow

    def check_complete(self, model: nn.Module) -> None:
        for name, m in model.named_modules():
            own = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
            if own and name not in self.visited:
                raise ModelError(f"align: module {name!r} ({type(m).__name__}) is not part of "
                                 f"a supported structure")


def _is_sequential(m: nn.Module) -> bool:
    from deepscope.nets.mlp import MLP
    return isinstance(m, MLP) or (isinstance(m, nn.Sequential)
                                  and type(m).forward is nn.Sequential.forward)


def _leaves(m: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The modules a Sequential applies in order (nested Sequentials flattened)."""
    out = []
    for name, child in m.named_children():
        full = f"{prefix}{name}"
        if _is_sequential(child):
            out += _leaves(child, full + ".")
        elif isinstance(child, (*_WEIGHT_LAYERS, nn.modules.batchnorm._BatchNorm, nn.Flatten,
                                *_ELEMENTWISE)):
            out.append((full, child))
        elif not any(True for _ in child.parameters()) and not any(
                True for _ in child.buffers()) and not list(child.children()):
            out.append((full, child))  # parameter-free: allowed only on unpermuted data
        else:
            raise ModelError(f"align: unsupported module {full!r} ({type(child).__name__}) in "
                             f"a Sequential; supported: Linear, Conv1d/2d/3d, BatchNorm, "
                             f"activations, dropout, pooling, Flatten, nested Sequentials")
    return out


def _chain(bld: _Builder, leaves: list[tuple[str, nn.Module]], flow: _Flow) -> _Flow:
    """A feed-forward stack whose last weight layer produces the model's outputs."""
    weights = [i for i, (_, m) in enumerate(leaves) if isinstance(m, _WEIGHT_LAYERS)]
    last = weights[-1] if weights else -1
    for i, (name, m) in enumerate(leaves):
        if isinstance(m, _WEIGHT_LAYERS):
            flow = bld.weight_layer(name, m, flow, None if i == last else name)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            flow = bld.norm(name, m, flow)
        elif isinstance(m, nn.Flatten):
            if flow.layout == "channels":
                # (N, C, ...) -> (N, C * positions): channels must stay the leading factor
                if m.start_dim >= 2 or m.end_dim != -1:
                    raise ModelError(f"align: Flatten {name!r} (start_dim={m.start_dim}, "
                                     f"end_dim={m.end_dim}) does not flatten channels "
                                     f"and positions together")
                flow = _Flow(flow.group, flow.size, "flat", None)
        elif isinstance(m, _ELEMENTWISE):
            continue
        elif flow.group is not None:
            raise ModelError(f"align: module {name!r} ({type(m).__name__}) acts on permuted "
                             f"units; only elementwise modules, pooling and Flatten may")
    return flow


def _resnet(bld: _Builder, model: nn.Module) -> None:
    from deepscope.nets.resnet import BasicBlock

    def norm(name, m, flow):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bld.norm(name, m, flow)
        elif not isinstance(m, nn.Identity):
            raise ModelError(f"align: unexpected {type(m).__name__} at {name!r} in a ResNet")

    count = 0
    res = bld.weight_layer("stem.conv", model.stem.conv, _Flow(), "residual.0")
    norm("stem.bn", model.stem.bn, res)
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            pre = f"stages.{s}.{b}"
            if not isinstance(block, BasicBlock):
                raise ModelError(f"align: unsupported ResNet block {pre!r} "
                                 f"({type(block).__name__})")
            inner = bld.weight_layer(f"{pre}.conv1", block.conv1, res, f"{pre}.conv1")
            norm(f"{pre}.bn1", block.bn1, inner)
            if isinstance(block.shortcut, nn.Identity):
                out = bld.weight_layer(f"{pre}.conv2", block.conv2, inner, res.group,
                                       new_group=False)
            else:
                count += 1
                sc = block.shortcut
                out = bld.weight_layer(f"{pre}.shortcut.conv", sc.conv, res, f"residual.{count}")
                norm(f"{pre}.shortcut.bn", sc.bn, out)
                bld.weight_layer(f"{pre}.conv2", block.conv2, inner, out.group, new_group=False)
            norm(f"{pre}.bn2", block.bn2, out)
            res = out
    bld.weight_layer("head", model.head, _Flow(res.group, res.size, "features", 1), None)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation groups of a supported model (see the module docstring)."""
    from deepscope.nets.cnn import MiniAlexNet
    from deepscope.nets.resnet import ResNet
    bld = _Builder(model)
    if isinstance(model, ResNet):
        _resnet(bld, model)
    elif isinstance(model, MiniAlexNet):
        _chain(bld, _leaves(model.features, "features.") + _leaves(model.classifier,
                                                                   "classifier."), _Flow())
    elif _is_sequential(model):
        _chain(bld, _leaves(model, ""), _Flow())
    else:
        raise ModelError(f"align: unsupported model {type(model).__name__}; supported: "
                         f"deepscope's MLP, CNN and ResNet and nn.Sequential stacks of "
                         f"Linear/Conv/BatchNorm/activation/pooling/Flatten modules")
    bld.check_complete(model)
    return bld.spec


# ------------------------------------------------------------------ applying permutations

def _take(t: Tensor, ax: Axis, perm: Tensor) -> Tensor:
    shape = t.shape
    if ax.block == 1:
        return t.index_select(ax.axis, perm.to(t.device))
    v = t.reshape(*shape[:ax.axis], -1, ax.block, *shape[ax.axis + 1:])
    return v.index_select(ax.axis, perm.to(t.device)).reshape(shape)


def _units(t: Tensor, ax: Axis) -> Tensor:
    """``t`` as a (units, rest) matrix along the axis."""
    shape = t.shape
    if ax.block > 1:
        t = t.reshape(*shape[:ax.axis], -1, ax.block, *shape[ax.axis + 1:])
    return t.movedim(ax.axis, 0).reshape(t.shape[ax.axis], -1)


def apply_permutations(spec: PermutationSpec, perms: Mapping[str, Tensor],
                       state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A new dict: every entry of ``state`` with its units permuted (unit ``i`` of the result
    is unit ``perms[g][i]`` of ``state``); entries no group touches are passed through."""
    keyed = spec.by_key()
    out = {}
    for k, t in state.items():
        for g, ax in keyed.get(k, ()):
            t = _take(t, ax, perms[g])
        out[k] = t
    return out


def _permuted_except(spec_keyed, perms, key: str, t: Tensor, skip: Axis) -> Tensor:
    for g, ax in spec_keyed.get(key, ()):
        if ax != skip:
            t = _take(t, ax, perms[g])
    return t


def _objective(pa: Mapping[str, Tensor], pb: Mapping[str, Tensor]) -> float:
    return float(sum((pa[k].double() * pb[k].double()).sum() for k in pa))


def _distance(pa: Mapping[str, Tensor], pb: Mapping[str, Tensor]) -> float:
    return float(sum(((pa[k].double() - pb[k].double()) ** 2).sum() for k in pa)) ** 0.5


# ------------------------------------------------------------------ weight matching

@ieee_float32
def align(a, b, *, max_iter: int = 100, seed: int = 0, progress: bool = False) -> AlignResult:
    """Permute ``b``'s hidden units to match ``a`` (Git Re-Basin weight matching).

    Args:
        a, b: models of the same supported architecture (``nn.Module`` or checkpoint
            paths); neither is modified.
        max_iter: at most this many rounds over all groups.
        seed: seeds the random order of the groups in every round.
        progress: a progress bar over rounds.

    Returns:
        :class:`~deepscope.landscape.result_paths.AlignResult`: ``.model`` (a new module,
        ``b`` permuted), ``.permutations``, table per round, summary (rounds, converged,
        objective and distance ‖θ_a - π(θ_b)‖ before/after, fraction of units moved).
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    model_a, _ = resolve_model(a, "a")
    model_b, _ = resolve_model(b, "b")
    check_same_architecture(model_a, model_b)
    t0 = time.perf_counter()
    spec = permutation_spec(model_a)
    keyed = spec.by_key()
    names = [n for n, _ in model_a.named_parameters()]
    with torch.no_grad():
        pa = {n: p.detach().double() for n, p in model_a.named_parameters()}
        device = next(iter(pa.values())).device if pa else torch.device("cpu")
        pb = {n: p.detach().to(device).double() for n, p in model_b.named_parameters()}
        perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
        objective_before = _objective(pa, pb)
        distance_before = _distance(pa, pb)
        rng = np.random.default_rng(seed)
        groups = list(spec.sizes)
        rows, converged, rounds = [], False, 0
        bar = progress_bar(range(1, max_iter + 1), enabled=progress, desc="weight matching",
                           unit="round")
        for rnd in bar:
            rounds = rnd
            changed = 0
            for gi in rng.permutation(len(groups)):
                g = groups[gi]
                n = spec.sizes[g]
                cost = torch.zeros(n, n, dtype=torch.float64, device=device)
                for ax in spec.axes[g]:
                    if ax.key not in pa:
                        continue  # buffers move with their units but do not score
                    wb = _permuted_except(keyed, perms, ax.key, pb[ax.key], ax)
                    cost += _units(pa[ax.key], ax) @ _units(wb, ax).T
                c = cost.cpu().numpy()
                _, cols = _assignment(c, maximize=True)
                idx = np.arange(n)
                old = float(c[idx, perms[g].numpy()].sum())
                new = float(c[idx, cols].sum())
                if new - old > 1e-10 * max(abs(old), abs(new), 1e-12) and not np.array_equal(
                        cols, perms[g].numpy()):
                    perms[g] = torch.as_tensor(cols, dtype=torch.long)
                    changed += 1
            aligned = apply_permutations(spec, perms, pb)
            moved = int(sum(int((p != torch.arange(len(p))).sum()) for p in perms.values()))
            rows.append({"round": rnd, "objective": _objective(pa, aligned),
                         "groups_changed": changed, "units_moved": moved})
            if changed == 0:
                converged = True
                break
        if hasattr(bar, "close"):
            bar.close()
        aligned = apply_permutations(spec, perms, pb)
        objective_after = _objective(pa, aligned)
        distance_after = _distance(pa, aligned)

        new_model = copy.deepcopy(model_b)
        state = apply_permutations(spec, perms, model_b.state_dict())
        new_model.load_state_dict(state)
    num_units = int(sum(spec.sizes.values()))
    moved = int(sum(int((p != torch.arange(len(p))).sum()) for p in perms.values()))
    summary = {
        "rounds": rounds,
        "converged": converged,
        "objective_before": objective_before,
        "objective_after": objective_after,
        "distance_before": distance_before,
        "distance_after": distance_after,
        "num_groups": len(groups),
        "num_units": num_units,
        "units_moved": moved,
        "fraction_moved": moved / num_units if num_units else 0.0,
        "num_params": int(sum(t.numel() for t in pa.values())),
        "time_s": time.perf_counter() - t0,
    }
    settings = {"max_iter": max_iter, "seed": seed, "groups": dict(spec.sizes),
                "parameters": len(names)}
    table = pd.DataFrame(rows, columns=list(ALIGN_COLUMNS))
    return AlignResult(kind="align", table=table, summary=summary, settings=settings,
                       model=new_model, permutations=perms, spec=spec)


def _assignment(cost, maximize: bool):
    """scipy's linear assignment, imported on first use (scipy.optimize takes ~0.4 s)."""
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(cost, maximize=maximize)
