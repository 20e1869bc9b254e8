"""Quadratic forms zᵀ H z of the loss Hessian by second-order forward propagation (Taylor mode).

Along a direction z in parameter space, L(θ + s z) = L + s ∇L·z + (s²/2) zᵀHz + O(s³), and
the second-order coefficient can be pushed forward through the network together with the
first: every intermediate value u of the forward pass carries (u, u', u'') = its value and
its first and second derivatives in s. For the operations that make the cost,

    linear / conv / matmul / mul (bilinear B):  y' = B(a', b) + B(a, b')
                                                y'' = B(a'', b) + 2 B(a', b') + B(a, b'')
    elementwise f:                               y' = f'(u) u',  y'' = f'(u) u'' + f''(u) u'²

with the parameters' own u' = z, u'' = 0 (Griewank & Walther, *Evaluating Derivatives*,
ch. 13, "Taylor and tensor coefficients"). The loss's second coefficient is zᵀHz. A
Hessian-vector product (reverse over reverse, what PyHessian and :class:`CurvatureOperator`
do) computes the whole vector H z; Hutchinson's trace estimate needs only the scalar
zᵀ H z. On the 784-512-512-10 MLP with 4096 samples the Taylor pass runs 4 of the 8 large
GEMMs of a product (the first layer's input has no derivative, so its weight's direction
enters once): 67 ms per probe against 121 ms for a product (2 CPU cores, float32).

How: the forward pass (model and loss) runs once per data batch under a
:class:`~torch.overrides.TorchFunctionMode` that records every torch call on a tape (the
values are kept, as an autograd graph keeps them). A probe replays the tape on the
derivatives only: constants (inputs, buffers, values that do not depend on a parameter) are
skipped, bilinear operations and known elementwise functions use the rules above (the
elementwise f'(u), f''(u) are computed once per tape), and any other operation goes through
``torch.func.jvp`` (first derivative) and a nested ``jvp`` (second), which is exact for any
operation with forward-mode derivatives. Python control flow is no obstacle: the path
depends on the values, which are fixed. In-place operations are recorded as their
out-of-place forms (the value before the update is kept for the earlier uses).

Where a model cannot be recorded or replayed (an operation without forward-mode derivatives,
``out=`` arguments, item assignment into a tracked tensor, ...) :class:`TaylorQuadraticForm`
raises :class:`TaylorUnsupported`, and :class:`QuadraticForms` falls back to ``z @ (H z)``
with Hessian-vector products. It also checks the first probe against that product
(``|zᵀHz_taylor − zᵀ(Hz)| ≤ c ‖z‖ ‖Hz‖``, c = 1e-5 in float32, 1e-10 in float64) and falls back if
they disagree, so a semantic gap in the recording can cost speed but not a wrong number.
Torch's own second-order forward formulas are wrong for a few operations (layer, group,
instance and training-mode batch norm, BCE with logits: off by O(1) against finite
differences in torch 2.13); those are replayed through compositions of elementary
operations (``_REWRITES``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from deepscope._params import unflatten

__all__ = ["TaylorQuadraticForm", "TaylorUnsupported", "QuadraticForms", "CHECK_RTOL"]

#: first-probe agreement with z @ (H z), relative to ‖z‖ ‖H z‖, by dtype (float32: ~80
#: machine epsilons; measured rounding differences on the benchmark MLP: 5e-9 to 1.4e-7)
CHECK_RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


class TaylorUnsupported(RuntimeError):
    """The forward pass uses something the Taylor tape cannot replay."""


_BILINEAR_WITH_BIAS = {F.linear, torch.nn.functional.linear, torch.conv1d, torch.conv2d,
                       torch.conv3d, F.conv1d, F.conv2d, F.conv3d}
_BILINEAR = {torch.matmul, torch.mm, torch.bmm, Tensor.matmul, Tensor.mm, Tensor.bmm,
             Tensor.__matmul__, torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__}
_UNARY = {torch.relu, F.relu, Tensor.relu, torch.tanh, F.tanh, Tensor.tanh, torch.sigmoid,
          F.sigmoid, Tensor.sigmoid, F.gelu, F.silu, F.elu, F.softplus, F.leaky_relu,
          F.hardtanh, F.relu6, torch.exp, Tensor.exp}
# calls that return no tensor or only describe one (shape, dtype, ...)
_PASS = {Tensor.dim, Tensor.size, Tensor.numel, Tensor.__len__, Tensor.is_floating_point,
         Tensor.is_contiguous, Tensor.item, Tensor.tolist}


def _inplace_twin(func, kwargs: dict):
    """(out-of-place function, kwargs) for an in-place call, None if not in place."""
    if kwargs.get("inplace"):
        return func, {**kwargs, "inplace": False}
    name = getattr(func, "__name__", "")
    if name.startswith("__i") and name.endswith("__"):  # __iadd__ -> __add__
        twin = getattr(Tensor, "__" + name[3:], None)
        if twin is None:
            raise TaylorUnsupported(f"in-place {name}")
        return twin, kwargs
    if name.endswith("_") and not name.endswith("__") and getattr(Tensor, name, None) is func:
        twin = getattr(Tensor, name[:-1], None)
        if twin is None:
            raise TaylorUnsupported(f"in-place Tensor.{name}")
        return twin, kwargs
    return None


def _storage(t: Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # no storage (e.g. a functorch wrapper)
        return id(t)


class _Ref:
    """A tape reference: parameter ``name`` or output ``leaf`` of node ``node``."""

    __slots__ = ("param", "node", "leaf")

    def __init__(self, param=None, node=None, leaf=None):
        self.param, self.node, self.leaf = param, node, leaf


class _Recorder(TorchFunctionMode):
    def __init__(self, params: dict[str, Tensor]):
        super().__init__()
        self.known: dict[int, _Ref] = {id(t): _Ref(param=n) for n, t in params.items()}
        self.values: list = []  # per node: its output pytree (leaf values kept alive)
        self.tape: list = []    # per node: (func, args, kwargs) with _Ref in place of tensors
        self.holders: dict[int, set[int]] = {}  # storage -> ids of the tensors recorded on it
        for t in params.values():
            self.holders.setdefault(_storage(t), set()).add(id(t))

    def _ref(self, x):
        if isinstance(x, Tensor):
            return self.known.get(id(x), x)
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PASS or getattr(func, "__name__", "") == "__get__":
            return func(*args, **kwargs)
        if func is Tensor.__setitem__:
            if isinstance(args[0], Tensor) and id(args[0]) in self.known:
                raise TaylorUnsupported("item assignment into a tensor of the forward pass")
            return func(*args, **kwargs)
        if "out" in kwargs and kwargs["out"] is not None:
            raise TaylorUnsupported(f"{getattr(func, '__name__', func)} with out=")
        twin = _inplace_twin(func, kwargs)
        rec_func, rec_kwargs = (func, kwargs) if twin is None else twin
        target = args[0] if args else None
        if twin is not None and isinstance(target, Tensor) and id(target) in self.known:
            ref = self.known[id(target)]
            if ref.param is not None:
                raise TaylorUnsupported("in-place update of a parameter")
            if self.holders.get(_storage(target), {id(target)}) != {id(target)}:
                raise TaylorUnsupported("in-place update of a tensor that shares memory "
                                        "with another value of the forward pass (a view)")
            # earlier uses saw the value before the update: keep a copy for them
            old = pytree.tree_leaves(self.values[ref.node])
            old[ref.leaf] = target.detach().clone()
            spec = pytree.tree_structure(self.values[ref.node])
            self.values[ref.node] = pytree.tree_unflatten(old, spec)
        rargs = pytree.tree_map(self._ref, args)
        rkwargs = pytree.tree_map(self._ref, rec_kwargs)
        out = func(*args, **kwargs)
        leaves = pytree.tree_leaves(out)
        if not any(isinstance(t, Tensor) for t in leaves):
            return out
        idx = len(self.tape)
        self.tape.append((rec_func, rargs, rkwargs))
        self.values.append(out)
        for i, t in enumerate(leaves):
            if isinstance(t, Tensor):
                self.known[id(t)] = _Ref(node=idx, leaf=i)
                self.holders.setdefault(_storage(t), set()).add(id(t))
        return out


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    mu = x.mean(dims, keepdim=True)
    y = (x - mu) * torch.rsqrt(((x - mu) ** 2).mean(dims, keepdim=True) + eps)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, num_groups, -1)
    mu = g.mean(-1, keepdim=True)
    y = ((g - mu) * torch.rsqrt(((g - mu) ** 2).mean(-1, keepdim=True) + eps)).reshape(x.shape)
    shape = (1, c, *([1] * (x.dim() - 2)))
    y = y if weight is None else y * weight.view(shape)
    return y if bias is None else y + bias.view(shape)


def _rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(normalized_shape), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt((x * x).mean(dims, keepdim=True) + eps)
    return y if weight is None else y * weight


def _instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5):
    if not use_input_stats:
        return F.instance_norm(x, running_mean, running_var, weight, bias, False, momentum,
                               eps)
    return _group_norm(x, x.shape[1], weight, bias, eps)


def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
    if not training and running_mean is not None and running_var is not None:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    dims = (0, *range(2, x.dim()))
    mu = x.mean(dims, keepdim=True)
    y = (x - mu) * torch.rsqrt(((x - mu) ** 2).mean(dims, keepdim=True) + eps)
    shape = (1, x.shape[1], *([1] * (x.dim() - 2)))
    y = y if weight is None else y * weight.view(shape)
    return y if bias is None else y + bias.view(shape)


def _bce_with_logits(x, target, weight=None, size_average=None, reduce=None,
                     reduction="mean", pos_weight=None):
    if pos_weight is not None or size_average is not None or reduce is not None:
        raise TaylorUnsupported("binary_cross_entropy_with_logits with pos_weight / legacy "
                                "reduction arguments")
    loss = F.softplus(x) - x * target
    loss = loss if weight is None else loss * weight
    return {"mean": loss.mean, "sum": loss.sum}.get(reduction, lambda: loss)()


#: operations whose forward-mode derivative formulas are not correct at second order in
#: torch 2.13 (checked against finite differences: layer / instance / training-mode batch
#: norm reuse saved statistics in their formula, off by O(1); BCE-with-logits likewise),
#: replayed through these compositions of elementary operations instead
_REWRITES = {F.layer_norm: _layer_norm, F.group_norm: _group_norm,
             F.instance_norm: _instance_norm, F.batch_norm: _batch_norm,
             F.binary_cross_entropy_with_logits: _bce_with_logits}
if hasattr(F, "rms_norm"):
    _REWRITES[F.rms_norm] = _rms_norm


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


class TaylorQuadraticForm:
    """``z -> zᵀ H z`` for the Hessian of ``op`` (a :class:`CurvatureOperator`, not GGN),
    one tape per data batch, recorded on first use."""

    def __init__(self, op):
        if op.ggn:
            raise TaylorUnsupported("the GGN has no Taylor quadratic form here")
        self.op = op
        # one tape per batch is kept when the operator keeps its gradient graphs (one batch:
        # the same memory); otherwise each form records each batch again (a forward pass)
        self.keep = bool(op.cache) or len(op.batches) == 1
        self._tapes: list = [None] * len(op.batches)
        self.num_forms = 0

    # ------------------------------------------------------------------ recording
    def _record(self, b: int):
        op = self.op
        xb, yb = op.batches[b]
        rec = _Recorder(op.params)
        from deepscope._params import eval_mode
        with torch.no_grad(), eval_mode(op.model), rec:
            loss = op._batch_loss(op.params, xb, yb)
        ref = rec.known.get(id(loss)) if isinstance(loss, Tensor) else None
        if ref is None or ref.node is None:
            raise TaylorUnsupported("the loss does not depend on the parameters")
        return rec, ref

    # ------------------------------------------------------------------ replay
    def _value(self, rec, r):
        if isinstance(r, _Ref):
            if r.param is not None:
                return self.op.params[r.param]
            return pytree.tree_leaves(rec.values[r.node])[r.leaf]
        return r

    def _jet(self, rec, r, jets, z):
        """(t1, t2) of a tape argument (None, None for constants)."""
        if isinstance(r, _Ref):
            if r.param is not None:
                return z.get(r.param), None
            return jets[r.node][r.leaf]
        return None, None

    def _replay(self, b: int, z: dict[str, Tensor]) -> Tensor:
        tape = self._tapes[b]
        if tape is None:
            tape = (*self._record(b), {})
            if self.keep:
                self._tapes[b] = tape
        rec, loss_ref, cache = tape
        jets: list = []
        for idx, (func, rargs, rkwargs) in enumerate(rec.tape):
            flat, spec = pytree.tree_flatten((rargs, rkwargs))
            tj = [self._jet(rec, r, jets, z) for r in flat]
            n_out = len(pytree.tree_leaves(rec.values[idx]))
            if all(t1 is None and t2 is None for t1, t2 in tj):
                jets.append([(None, None)] * n_out)
                continue
            vals = [self._value(rec, r) for r in flat]
            jets.append(self._rule(func, spec, vals, tj, rec.values[idx], idx, cache))
        t1, t2 = jets[loss_ref.node][loss_ref.leaf]
        if t2 is None:
            return torch.zeros((), dtype=self.op.dtype, device=self.op.device)
        return t2.reshape(())

    def _rule(self, func, spec, vals, tj, out, idx, cache):
        args, kwargs = pytree.tree_unflatten(vals, spec)
        jet_pos = [i for i, (t1, t2) in enumerate(tj) if t1 is not None or t2 is not None]
        if (func in _BILINEAR_WITH_BIAS or func in _BILINEAR) and len(args) >= 2:
            # fast path: the jets sit in the two factors (and a positional bias) only
            with_bias = func in _BILINEAR_WITH_BIAS
            slots = {0, 1, 2} if with_bias and len(args) > 2 and isinstance(args[2], Tensor) \
                else {0, 1}
            if set(jet_pos) <= slots and len(pytree.tree_leaves(args[:2])) == 2:
                return [self._bilinear(func, args, kwargs, tj, with_bias, out)]
        if func in _UNARY and jet_pos == [0]:
            return [self._unary(func, args, kwargs, tj[0], idx, cache)]
        return self._generic(_REWRITES.get(func, func), vals, spec, tj, jet_pos)

    @staticmethod
    def _bilinear(func, args, kwargs, tj, has_bias, out):
        a, bb = args[0], args[1]
        rest = list(args[2:])
        (a1, a2), (b1, b2) = tj[0], tj[1]
        c1 = c2 = None
        if has_bias:  # the bias enters additively: its own jet is added below
            if rest:
                if isinstance(rest[0], Tensor):
                    c1, c2 = tj[2]
                rest[0] = None
            elif kwargs.get("bias") is not None:
                kwargs = {**kwargs, "bias": None}  # a constant (no jet: checked by caller)

        def f(x, y):
            return func(x, y, *rest, **kwargs)

        t1 = _add(f(a1, bb) if a1 is not None else None, f(a, b1) if b1 is not None else None)
        t2 = None
        if a2 is not None:
            t2 = f(a2, bb)
        if a1 is not None and b1 is not None:
            t2 = _add(t2, 2 * f(a1, b1))
        if b2 is not None:
            t2 = _add(t2, f(a, b2))
        if has_bias:
            t1, t2 = _add(t1, _bias_jet(c1, out, func)), _add(t2, _bias_jet(c2, out, func))
        return (t1, t2)

    @staticmethod
    def _unary(func, args, kwargs, jet, idx, cache):
        t1, t2 = jet
        if idx not in cache:
            u = args[0]
            rest = args[1:]

            def f(v):
                return func(v, *rest, **kwargs)

            # f'(u), f''(u) of an elementwise f, by reverse mode (double backward is
            # implemented for more activations than forward over forward, e.g. SiLU)
            try:
                with torch.enable_grad():
                    v = u.detach().requires_grad_(True)
                    (d1,) = torch.autograd.grad(f(v).sum(), v, create_graph=True)
                    d2 = None
                    if d1.requires_grad:
                        (d2,) = torch.autograd.grad(d1.sum(), v, allow_unused=True)
            except (RuntimeError, NotImplementedError) as exc:
                raise TaylorUnsupported(f"{getattr(func, '__name__', func)}: "
                                        f"{str(exc).splitlines()[0][:200]}") from None
            d1 = d1.detach()
            cache[idx] = (d1, None if d2 is None or not bool(d2.any()) else d2.detach())
        d1, d2 = cache[idx]
        y1 = None if t1 is None else d1 * t1
        y2 = None if t2 is None else d1 * t2
        if d2 is not None and t1 is not None:
            y2 = _add(y2, d2 * t1 * t1)
        return (y1, y2)

    @staticmethod
    def _generic(func, vals, spec, tj, jet_pos):
        def f(*jv):
            v = list(vals)
            for i, p in zip(jet_pos, jv):
                v[i] = p
            a, k = pytree.tree_unflatten(v, spec)
            return func(*a, **k)

        prim = tuple(vals[i] for i in jet_pos)

        def tangents(which):
            return tuple(torch.zeros_like(vals[i]) if tj[i][which] is None else tj[i][which]
                         for i in jet_pos)

        T1 = tangents(0)
        try:
            _, y1 = torch.func.jvp(f, prim, T1)
            y2 = None
            if any(tj[i][1] is not None for i in jet_pos):
                y2 = torch.func.jvp(f, prim, tangents(1))[1]
            if any(tj[i][0] is not None for i in jet_pos):
                _, h = torch.func.jvp(lambda *p: torch.func.jvp(f, p, T1)[1], prim, T1)
                y2 = h if y2 is None else pytree.tree_map(_add, y2, h)
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            name = getattr(func, "__name__", str(func))
            raise TaylorUnsupported(f"{name}: {str(exc).splitlines()[0][:200]}") from None
        l1, l2 = pytree.tree_leaves(y1), (pytree.tree_leaves(y2) if y2 is not None else None)
        return [(a if isinstance(a, Tensor) else None,
                 (l2[i] if l2 is not None and isinstance(l2[i], Tensor) else None))
                for i, a in enumerate(l1)]

    # ------------------------------------------------------------------ public
    def __call__(self, z: Tensor) -> Tensor:
        """zᵀ H z for a flat vector ``z`` of the operator's length."""
        op = self.op
        zd = unflatten(z.to(device=op.device, dtype=op.dtype), op.layout)
        total = None
        with torch.no_grad():
            for b, (xb, _) in enumerate(op.batches):
                q = self._replay(b, zd).detach()
                if len(op.batches) > 1:
                    q = q * (xb.shape[0] / op.num_samples)
                total = q if total is None else total + q
        self.num_forms += 1
        op.num_matvecs += 1  # the operator's product count: a form counts as one
        if op.callback is not None:
            op.callback()
        return total


_CONV = {torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d}


def _bias_jet(c, out: Tensor, func):
    """A bias jet (out_features / channels) in the layer output's shape."""
    if c is None:
        return None
    if func in _CONV:
        shape = (1, -1, *([1] * (out.dim() - 2))) if out.dim() > c.dim() + 1 else \
            (-1, *([1] * (out.dim() - 1)))  # unbatched convolution input
        return c.view(shape).expand_as(out)
    return c.expand_as(out)


class QuadraticForms:
    """``rows(Z)``: zᵀ H z for each row of ``Z`` (c, dim), by the Taylor tape where it works.

    ``mode="auto"``: the first row is also computed as ``z @ (H z)`` (one Hessian-vector
    product) and the Taylor value must agree to ``CHECK_RTOL[dtype] · ‖z‖ ‖H z‖``; if the
    model cannot be recorded or replayed, or the values disagree, every form is computed from
    products (``info["taylor_fallback"]`` says why). ``mode="hvp"``: products only.
    ``info["quadratic_forms"]`` is ``"taylor"`` or ``"hvp"`` once the first row is done.
    """

    def __init__(self, op, mode: str = "auto"):
        if mode not in ("auto", "hvp"):
            raise ValueError(f"mode must be 'auto' or 'hvp', got {mode!r}")
        self.op = op
        self.taylor: TaylorQuadraticForm | None = None
        self.info: dict = {"quadratic_forms": None, "taylor_fallback": None}
        if mode == "hvp" or op.ggn:
            self.info.update(quadratic_forms="hvp",
                             taylor_fallback="ggn" if op.ggn and mode != "hvp" else None)

    def _product(self, z: Tensor) -> Tensor:
        z = z.to(device=self.op.device, dtype=self.op.dtype)
        return z @ self.op.matvec(z)

    def _first(self, z: Tensor) -> Tensor:
        """The first form: Taylor and product, compared; sets the mode."""
        ref = None
        try:
            form = TaylorQuadraticForm(self.op)
            q = form(z)
            zz = z.to(device=self.op.device, dtype=self.op.dtype)
            hz = self.op.matvec(zz)
            ref = zz @ hz
            scale = float(zz.norm()) * float(hz.norm())
            if abs(float(q) - float(ref)) <= CHECK_RTOL[self.op.dtype] * max(scale, 1e-300):
                self.taylor = form
                self.info["quadratic_forms"] = "taylor"
                return ref
            reason = f"check failed: Taylor {float(q):.6g} vs product {float(ref):.6g}"
        except TaylorUnsupported as exc:
            reason = str(exc)
        self.info.update(quadratic_forms="hvp", taylor_fallback=reason)
        return ref if ref is not None else self._product(z)

    def rows(self, Z: Tensor) -> Tensor:
        out = []
        for z in Z:
            if self.info["quadratic_forms"] is None:
                out.append(self._first(z))
            elif self.taylor is not None:
                out.append(self.taylor(z))
            else:
                out.append(self._product(z))
        return torch.stack(out).to(Z.dtype) if out else Z.new_zeros(0)
