"""Slow, obvious reference implementations (python loops over pairs / tuples) for the tests."""
import itertools
import math

import numpy as np


def gdv_bruteforce(x, y):
    """Schilling et al.'s GDV written out with python loops over pairs of points."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y)
    n, dim = x.shape
    s = np.zeros_like(x)
    for d in range(dim):
        mu = sum(x[:, d]) / n
        sd = math.sqrt(sum((v - mu) ** 2 for v in x[:, d]) / n)
        if not np.all(x[:, d] == x[0, d]) and sd > 0:
            s[:, d] = (x[:, d] - mu) / (2 * sd)

    def dist(i, j):
        return math.sqrt(sum((s[i, d] - s[j, d]) ** 2 for d in range(dim)))

    classes = sorted(set(y.tolist()))
    members = {c: [i for i in range(n) if y[i] == c] for c in classes}
    intra = []
    for c in classes:
        pairs = [(i, j) for i in members[c] for j in members[c] if i != j]
        intra.append(sum(dist(i, j) for i, j in pairs) / len(pairs))
    inter = []
    for a, b in itertools.combinations(classes, 2):
        pairs = [(i, j) for i in members[a] for j in members[b]]
        inter.append(sum(dist(i, j) for i, j in pairs) / len(pairs))
    return (sum(intra) / len(intra) - sum(inter) / len(inter)) / math.sqrt(dim)


def hsic_song(k, l):
    """Unbiased HSIC (Song et al. 2012, eq. 5) from kernel matrices, as written in the paper."""
    k = np.array(k, dtype=np.float64)
    l = np.array(l, dtype=np.float64)
    n = k.shape[0]
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def hsic_ustatistic(k, l):
    """The same estimator as the U-statistic over ordered 4-tuples of distinct indices."""
    n = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2.0 * k[i, j] * l[i, q]
        count += 1
    return total / count


def cka_biased_gram(x, y):
    """Biased linear CKA from centered Gram matrices: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l) / math.sqrt(np.sum(k * k) * np.sum(l * l)))


def cka_unbiased(x, y):
    """Unbiased linear CKA from uncentered linear kernels and hsic_song."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    k, l = x @ x.T, y @ y.T
    return hsic_song(k, l) / math.sqrt(hsic_song(k, k) * hsic_song(l, l))
