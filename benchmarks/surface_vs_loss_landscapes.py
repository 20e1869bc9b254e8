"""deepscope.landscape.surface against loss-landscapes 3.0.6 ``random_plane`` at 25x25.

Target (issue #5 item 5): deepscope's 2-D surface at least 2x faster per grid point than
loss-landscapes' ``random_plane`` on the same model and data, both doing the same work per
grid point: one forward pass over the same evaluation batch (loss-landscapes evaluates its
``Loss`` metric on the one batch it is given; deepscope gets that batch as its data with
``batch_size`` = its size), filter-normalized directions, 625 points.

Model and data: the demo's 64-256-128-10 ReLU MLP (``--arch mlp``; ``--arch cnn`` for a small
MiniAlexNet) trained briefly on scikit-learn's digits, evaluated on all 1797 images (train and
test splits together), no downloads.

    .venv/bin/python benchmarks/surface_vs_loss_landscapes.py [--arch mlp|cnn] [--device cpu]

Measured (2026-11-23, one H100 machine, torch 2.11, --repeats 3, time per grid point, 1797
samples per point): on the GPU the target is met, on the CPU it is not: both sides then do
the same forward FLOPs per point and the CPU is compute-bound, so batching cannot help there.

    device, arch        deepscope          loss-landscapes    ratio
    cuda, mlp           0.040 ms (vmap)    0.486 ms           12.3x
    cuda, cnn           0.119 ms (vmap)    0.453 ms            3.8x
    cpu (2 thr), mlp    1.50 ms (loop)     1.58 ms             1.05x
    cpu (2 thr), cnn    18.9 ms (loop)     22.0 ms             1.17x

On the 2-core development machine (2026-11-23, idle, torch 2.13 CPU, mlp): 2.42 ms vs
2.46 ms per point, ratio 1.02.

loss-landscapes is optional (``pip install --no-deps loss-landscapes==3.0.6``). Its known bugs
are not replicated by deepscope (see docs / the reference notes): ``distance`` is inverted
(the plane spans ``||theta|| / distance``), its directions are drawn from U[0, 1) (all
positive, so two seeds give nearly parallel directions), it switches ``requires_grad`` off on
the model it is given (and with ``deepcopy_model=False`` moves the model itself), and its
directions are created on the CPU, so it cannot run a CUDA model: for ``--device cuda`` this
script patches ``rand_u_like`` to draw on the parameters' device (the one change needed to
time it there) and says so.
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F

from deepscope._params import state_fingerprint
from deepscope.landscape.surface import surface


def make_problem(arch: str, seed: int, epochs: int, device: str):
    from deepscope.workflows import train_and_save
    arch_spec = ({"arch": "mlp", "widths": [256, 128], "activation": "relu"} if arch == "mlp"
                 else {"arch": "cnn", "channels": [16, 32], "fc": [64, 32]})
    run = train_and_save(arch_spec, {"name": "digits", "seed": seed},
                         {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32,
                          "epochs": epochs, "seed": seed}, None, progress=False)
    ds = run.dataset
    x = torch.cat([ds.x_train, ds.x_test]).to(device)
    y = torch.cat([ds.y_train, ds.y_test]).to(device)
    model = run.model.to(device).eval()
    return model, x, y


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_loss_landscapes(model, x, y, steps: int, device: str):
    import loss_landscapes
    from loss_landscapes.metrics import Loss
    if device.startswith("cuda"):
        import loss_landscapes.main as ll_main
        from loss_landscapes.model_interface import model_parameters as mp

        def rand_u_like_on_device(example):
            return mp.ModelParameters([torch.rand(size=p.size(), dtype=p.dtype,
                                                  device=p.device) for p in example])
        mp.rand_u_like = rand_u_like_on_device
        ll_main.rand_u_like = rand_u_like_on_device
    metric = Loss(F.cross_entropy, x, y)
    torch.manual_seed(0)
    sync(device)
    t0 = time.perf_counter()
    grid = loss_landscapes.random_plane(model, metric, distance=1, steps=steps,
                                        normalization="filter", deepcopy_model=True)
    sync(device)
    return grid, time.perf_counter() - t0


def run_deepscope(model, x, y, steps: int, device: str, points_per_batch, engine="auto"):
    sync(device)
    t0 = time.perf_counter()
    res = surface(model, (x, y), dims=2, steps=steps, span=1.0, batch_size=x.shape[0],
                  points_per_batch=points_per_batch, seed=0, engine=engine, progress=False)
    sync(device)
    return res, time.perf_counter() - t0


def bug_checks(model, x, y, res) -> None:
    """Two of loss-landscapes' bugs, shown on throwaway copies (deepscope does neither)."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_parameters import ModelParameters, rand_u_like
    params = ModelParameters([p.detach().clone() for p in model.parameters()])
    u = torch.cat([t.reshape(-1) for t in rand_u_like(params)])
    d = torch.cat([t.reshape(-1) for t in res.directions[0].values()])
    d = d[d != 0]
    print(f"\ndirections: loss-landscapes draws U[0,1): {float((u > 0).double().mean()):.3f} of "
          f"entries positive; deepscope (Gaussian): {float((d > 0).double().mean()):.3f}")
    victim = copy.deepcopy(model)
    loss_landscapes.random_plane(victim, Loss(F.cross_entropy, x[:8], y[:8]), steps=2,
                                 normalization="filter", deepcopy_model=False)
    moved = any(not torch.equal(a, b) for a, b in zip(victim.parameters(), model.parameters()))
    grads = all(p.requires_grad for p in victim.parameters())
    print(f"random_plane(deepcopy_model=False): model weights changed: {moved}; "
          f"requires_grad left on: {grads}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs, fastest kept")
    ap.add_argument("--points-per-batch", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--engine", choices=("auto", "vmap", "loop"), default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model, x, y = make_problem(args.arch, args.seed, args.epochs, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model(x)
        loss0 = float(F.cross_entropy(out, y))
        acc0 = float((out.argmax(1) == y).float().mean())
    points = args.steps ** 2
    print(f"{args.arch} on digits, {n_params} parameters, {x.shape[0]} samples (one batch), "
          f"loss {loss0:.4f}, accuracy {acc0:.3f}; grid {args.steps}x{args.steps} = {points} "
          f"points; torch {torch.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads")

    try:
        import loss_landscapes  # noqa: F401 - only whether it imports
        ll_error = None
    except Exception as exc:  # noqa: BLE001 - report whatever keeps it from importing
        ll_error = f"{type(exc).__name__}: {exc}"

    if args.device.startswith("cuda") and ll_error is None:
        print("note: loss-landscapes' rand_u_like is patched to draw on the parameters' device "
              "(it creates CPU tensors and cannot step a CUDA model otherwise)")
    fp = state_fingerprint(model)
    # warm-up (allocations, vmap tracing) outside the timings
    surface(model, (x, y), dims=1, steps=3, batch_size=x.shape[0], progress=False)
    t_ds = t_ll = math.inf
    res = grid = None
    for _ in range(args.repeats):
        r, dt = run_deepscope(model, x, y, args.steps, args.device, args.points_per_batch,
                              args.engine)
        if dt < t_ds:
            t_ds, res = dt, r
        if ll_error is None:
            try:
                g, dt = run_loss_landscapes(model, x, y, args.steps, args.device)
                if dt < t_ll:
                    t_ll, grid = dt, g
            except Exception as exc:  # noqa: BLE001
                ll_error = f"random_plane failed: {type(exc).__name__}: {exc}"
    assert state_fingerprint(model) == fp, "deepscope changed the model"
    s = res.summary
    print(f"\ndeepscope        surface 2-D {args.steps}x{args.steps} ({s['evaluation']}, "
          f"{s['points_per_batch']} points per chunk, first-layer shortcut: "
          f"{s['first_layer_shortcut']}): {t_ds:.2f} s, "
          f"{t_ds / points * 1e3:.3f} ms per point; center loss {s['center_loss']:.4f} "
          f"(model's {loss0:.4f}), loss range [{s['min_loss']:.4g}, {s['max_loss']:.4g}]")
    if ll_error is not None:
        print(f"loss-landscapes  cannot run ({ll_error}); only deepscope's numbers are reported")
        return
    print(f"loss-landscapes  random_plane {args.steps}x{args.steps} (filter normalization, "
          f"deepcopy_model=True): {t_ll:.2f} s, {t_ll / points * 1e3:.3f} ms per point; "
          f"loss range [{float(grid.min()):.4g}, {float(grid.max()):.4g}]")
    bug_checks(model, x, y, res)
    ratio = t_ll / t_ds
    print(f"\nper-point time ratio loss-landscapes / deepscope: {ratio:.2f} "
          f"(target >= 2: {'met' if ratio >= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
