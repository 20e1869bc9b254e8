"""Small synthetic datasets and models for the training tests (fast on 2 CPU cores)."""
import torch

from deepscope.data import Dataset


def make_linreg(n_train=128, n_test=64, d=8, k=1, noise=0.1, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, k, generator=g)
    y = scale * (x @ w + noise * torch.randn(n, k, generator=g))
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "regression", None,
                   spec={"name": "linreg"})


def make_logreg(n_train=256, n_test=128, d=8, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    y = (x @ w + 0.3 * torch.randn(n, classes, generator=g)).argmax(1)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "classification",
                   classes, spec={"name": "logreg"})


def small_mlp(d_in=8, d_out=2, hidden=16, dropout=0.0, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(d_in, hidden), torch.nn.ReLU()]
        if dropout:
            layers.append(torch.nn.Dropout(dropout))
        layers.append(torch.nn.Linear(hidden, d_out))
        return torch.nn.Sequential(*layers)


def linear(d_in=8, d_out=1, seed=0, dtype=torch.float32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Linear(d_in, d_out).to(dtype)
