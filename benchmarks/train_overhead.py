"""Overhead of ``deepscope.train.train`` over a plain hand-written PyTorch loop.

Same model (MLP 64-256-256-10 from ``deepscope.nets``), same data (sklearn digits via
``deepscope.data``), same optimizer (SGD, lr 0.05, momentum 0.9), batch size 32, same shuffling
(``torch.randperm`` from a generator seeded identically, so both produce bitwise-equal weights,
which is checked), and the same evaluation work: a full no-grad pass over train and test in
eval mode at initialization and after every epoch. Repetitions are interleaved in one process
and the best (minimum) time of each is compared: interference from other processes only
ever adds time, so the minimum is the most reproducible estimate (as ``timeit`` does); the
medians are printed too.

    python benchmarks/train_overhead.py [--epochs 10] [--reps 7] [--threads 1]

Exit status 1 when the overhead (deepscope / plain - 1) exceeds ``--max-overhead`` (10%).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from deepscope.data import load_dataset
from deepscope.nets import build_model
from deepscope.train import TrainConfig, train

LR, MOMENTUM, BATCH, EVAL_BATCH = 0.05, 0.9, 32, 1024


def plain_evaluate(model, x, y):
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, x.shape[0], EVAL_BATCH):
            out = model(x[i:i + EVAL_BATCH])
            yb = y[i:i + EVAL_BATCH]
            total += F.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
    model.train()
    return float(total) / x.shape[0], float(correct) / x.shape[0]


def plain_loop(model0, ds, epochs: int, seed: int):
    model = copy.deepcopy(model0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    g = torch.Generator().manual_seed(seed)
    x, y = ds.x_train, ds.y_train
    n = x.shape[0]
    history = [(plain_evaluate(model, x, y), plain_evaluate(model, ds.x_test, ds.y_test))]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        history.append((plain_evaluate(model, x, y), plain_evaluate(model, ds.x_test, ds.y_test)))
    return model, history


def deepscope_loop(model0, ds, epochs: int, seed: int):
    cfg = TrainConfig(optimizer="sgd", lr=LR, momentum=MOMENTUM, batch_size=BATCH,
                      epochs=epochs, seed=seed)
    res = train(model0, ds, cfg, progress=False)
    return res.model, res.history


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-overhead", type=float, default=0.10)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    ds = load_dataset("digits")
    model0 = build_model({"arch": "mlp", "input_shape": [64], "num_outputs": 10,
                          "widths": [256, 256]}, seed=0)
    seed = 0

    # warm-up (first-call costs) and the equivalence check
    m_plain, h_plain = plain_loop(model0, ds, 1, seed)
    m_ds, h_ds = deepscope_loop(model0, ds, 1, seed)
    same = all(torch.equal(a, b) for a, b in zip(m_plain.state_dict().values(),
                                                  m_ds.state_dict().values()))

    times = {"plain": [], "deepscope": []}
    runners = {"plain": plain_loop, "deepscope": deepscope_loop}
    for rep in range(args.reps):
        order = ("plain", "deepscope") if rep % 2 == 0 else ("deepscope", "plain")
        for name in order:
            t = time.perf_counter()
            runners[name](model0, ds, args.epochs, seed)
            times[name].append(time.perf_counter() - t)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    overhead = best["deepscope"] / best["plain"] - 1.0
    steps = args.epochs * -(-ds.x_train.shape[0] // BATCH)
    print(f"train overhead: MLP 64-256-256-10 on digits ({ds.x_train.shape[0]} train), "
          f"SGD momentum, batch {BATCH}, {args.epochs} epochs ({steps} steps) + per-epoch "
          f"train/test evaluation; torch {torch.__version__}, {args.threads} thread(s), "
          f"best of {args.reps} interleaved runs")
    print(f"  same final weights (bitwise): {same}")
    for k in ("plain", "deepscope"):
        print(f"  {k:<10} best {best[k]:.3f} s  median {med[k]:.3f} s   runs: "
              + ", ".join(f"{t:.3f}" for t in times[k]))
    print(f"  overhead (deepscope / plain - 1): {overhead:+.1%} "
          f"(limit {args.max_overhead:.0%})")
    if not same:
        print("  FAIL: the two loops did not compute the same weights", file=sys.stderr)
        return 1
    if overhead > args.max_overhead:
        print("  FAIL: overhead above the limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
