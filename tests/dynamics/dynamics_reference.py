"""Slow, obvious reference implementations for the dynamics tests."""
import copy
import math

import torch


def slow_jacobian(model, x):
    """(n, k, P) per-sample Jacobian by one autograd.grad call per (sample, output), float64,
    eval mode, on a deep copy (parameters in named_parameters order)."""
    net = copy.deepcopy(model).double().eval()
    params = [p for _, p in net.named_parameters()]
    rows = []
    for i in range(x.shape[0]):
        out = net(x[i:i + 1].double()).reshape(-1)
        per = []
        for c in range(out.numel()):
            grads = torch.autograd.grad(out[c], params, retain_graph=True, allow_unused=True)
            per.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(grads, params)]))
        rows.append(torch.stack(per))
    return torch.stack(rows)


def slow_ntk(model, x, outputs="sum"):
    J = slow_jacobian(model, x)
    n, k, P = J.shape
    if outputs == "all":
        Jf = J.reshape(n * k, P)
        return Jf @ Jf.T
    if outputs == "sum":
        return sum(J[:, c] @ J[:, c].T for c in range(k))
    return J[:, outputs] @ J[:, outputs].T


def monte_carlo_hinf(x, num_samples=400_000, seed=0):
    """E_w[x_i.x_j 1{w.x_i >= 0, w.x_j >= 0}], w ~ N(0, I), by sampling (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = x.double()
    acc = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64)
    done = 0
    while done < num_samples:
        b = min(50_000, num_samples - done)
        w = torch.randn(b, x.shape[1], generator=g, dtype=torch.float64)
        ind = (x @ w.T >= 0).double()          # (n, b)
        acc += ind @ ind.T
        done += b
    return (x @ x.T) * acc / num_samples


def du_gram(net, x):
    """H_ij = (1/m) x_i.x_j sum_r a_r^2 1{w_r.x_i >= 0, w_r.x_j >= 0} (Du et al.)."""
    w = net.weight.detach().double()
    a = net.a.double()
    ind = (x.double() @ w.T >= 0).double() * a.abs()
    return (x.double() @ x.double().T) * (ind @ ind.T) / w.shape[0]


def angle_gram(x):
    """H-infinity through the angle between the points, written out element by element."""
    n = x.shape[0]
    out = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            c = float(x[i].double() @ x[j].double())
            c = max(-1.0, min(1.0, c))
            out[i, j] = c * (math.pi - math.acos(c)) / (2 * math.pi)
    return out
