"""IDX and CIFAR-10 loaders on tiny files written in exactly the published formats."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from deepscope.data import (load_cifar10, load_dataset, load_mnist_idx, read_cifar_batch,
                            read_idx)
from deepscope.errors import ConfigError, DataError

ROWS, COLS = 5, 4  # not square, so a row/column mix-up shows


def write_idx(path, arr: np.ndarray, type_code: int, compress: bool = False) -> None:
    """IDX: magic 0x0000<type><ndim>, big-endian uint32 dims, big-endian data."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    payload = (struct.pack(">BBBB", 0, 0, type_code, arr.ndim)
               + struct.pack(f">{arr.ndim}I", *arr.shape)
               + arr.astype(big[type_code]).tobytes())
    if compress:
        payload = gzip.compress(payload)
    with open(path, "wb") as fh:
        fh.write(payload)


def make_mnist(folder, compress=False, n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    data = {"train": (rng.integers(0, 256, (n_train, ROWS, COLS), dtype=np.uint8),
                      np.arange(n_train, dtype=np.uint8) % 3),
            "t10k": (rng.integers(0, 256, (n_test, ROWS, COLS), dtype=np.uint8),
                     np.arange(n_test, dtype=np.uint8) % 3)}
    ext = ".gz" if compress else ""
    for prefix, (images, labels) in data.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, 0x08, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, 0x08, compress)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress):
    data = make_mnist(tmp_path, compress)
    ds = load_mnist_idx(tmp_path, standardize=False)
    images, labels = data["train"]
    assert ds.x_train.shape == (30, ROWS * COLS) and ds.x_test.shape == (12, ROWS * COLS)
    expect = torch.from_numpy(images.reshape(30, -1).astype(np.float32) / np.float32(255))
    assert torch.equal(ds.x_train, expect)
    assert torch.equal(ds.y_train, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(ds.y_test, torch.from_numpy(data["t10k"][1].astype(np.int64)))
    assert ds.num_classes == 3 and ds.spec["path"] == str(tmp_path)
    img = load_mnist_idx(tmp_path, flat=False, standardize=False)
    assert img.x_train.shape == (30, 1, ROWS, COLS)
    assert torch.equal(img.x_train[3, 0], torch.from_numpy(images[3] / np.float32(255)))
    # the same through load_dataset, a round trip of the spec, and a path to one file
    std = load_dataset({"name": "mnist-idx", "path": str(tmp_path)}, num_classes=10)
    assert std.num_classes == 10 and torch.isfinite(std.x_train).all()
    assert torch.equal(load_dataset(std.spec).x_train, std.x_train)
    one = sorted(tmp_path.iterdir())[0]
    assert torch.equal(load_mnist_idx(one, standardize=False).x_train, ds.x_train)
    sub = load_mnist_idx(tmp_path, n_train=9, n_test=3, label_noise=0.5)
    assert sub.x_train.shape == (9, ROWS * COLS) and sub.x_test.shape == (3, ROWS * COLS)


def test_read_idx_other_types(tmp_path):
    for code, dtype in ((0x0C, np.int32), (0x0E, np.float64), (0x0B, np.int16)):
        arr = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
        write_idx(tmp_path / "a.idx", arr, code)
        got = read_idx(tmp_path / "a.idx")
        assert got.dtype.isnative and np.array_equal(got, arr)


def test_wrong_magic(tmp_path):
    make_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    images.write_bytes(labels.read_bytes())  # a labels file where images belong
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected IDX magic "
                                        r"number 0x00000803.*got 0x00000801"):
        load_mnist_idx(tmp_path)
    with pytest.raises(DataError, match="expected an IDX magic number"):
        (tmp_path / "junk").write_bytes(b"PK\x03\x04" + bytes(20))
        read_idx(tmp_path / "junk")


@pytest.mark.parametrize("cut, fragment", [(2, "truncated IDX file: expected a 4-byte magic"),
                                           (10, "truncated IDX header"),
                                           (-5, "truncated IDX data: expected 600 bytes")])
def test_truncated_idx(tmp_path, cut, fragment):
    make_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(DataError, match=f"train-images-idx3-ubyte: {fragment}"):
        load_mnist_idx(tmp_path)


def test_trailing_bytes_and_bad_gzip_and_missing_files(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        load_mnist_idx(tmp_path)
    gz = tmp_path / "gz"
    gz.mkdir()
    make_mnist(gz, compress=True)
    g = gz / "train-labels-idx1-ubyte.gz"
    g.write_bytes(g.read_bytes()[:-12])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: expected a complete gzip"):
        load_mnist_idx(gz)
    os.remove(gz / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):
        load_mnist_idx(gz)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist_idx(tmp_path / "nowhere")


def test_label_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, np.uint8), 0x08)
    with pytest.raises(DataError, match="30 images but .* 29 labels"):
        load_mnist_idx(tmp_path)
    with pytest.raises(ConfigError, match="n_train must be <= 30"):
        make_mnist(tmp_path)
        load_mnist_idx(tmp_path, n_train=31)


# ---------------------------------------------------------------------------- CIFAR-10

def make_cifar(folder, per_batch=4, n_test=3, protocol=pickle.DEFAULT_PROTOCOL, seed=0):
    """CIFAR-10 python batches: dicts with bytes keys, b'data' (N, 3072) uint8, b'labels'."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        batch = {b"batch_label": f"batch {k}".encode(),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"img{k}_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
        written[name] = batch
    return written


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_round_trip(tmp_path, protocol):
    written = make_cifar(tmp_path, protocol=protocol)
    ds = load_cifar10(tmp_path, standardize=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.num_classes == 10
    data = np.concatenate([written[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    expect = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255))
    assert torch.equal(ds.x_train, expect)
    labels = sum((written[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.y_train.tolist() == labels
    assert ds.y_test.tolist() == written["test_batch"][b"labels"]
    # red plane first: pixel (row 0, col 1) of channel 2 is byte 2048 + 1
    assert ds.x_train[0, 2, 0, 1] == float(data[0, 2049]) / np.float32(255)
    flat = load_cifar10(tmp_path, flat=True)
    assert flat.x_train.shape == (20, 3072) and torch.isfinite(flat.x_train).all()
    assert torch.equal(load_dataset(flat.spec).x_train, flat.x_train)


def test_cifar10_in_batches_subfolder(tmp_path):
    make_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", path=str(tmp_path), n_train=10)
    assert ds.x_train.shape == (10, 3, 32, 32)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("payload, fragment", [
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Evil()},
     "refusing to unpickle (posix|nt).getcwd"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1],
      b"x": __import__("collections").OrderedDict()}, "refusing to unpickle collections"),
    ([1, 2, 3], "expected a pickled dict, got list"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8 array"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "expected b'labels' as 2"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "got nothing"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, r"labels expected in 0..9"),
])
def test_cifar_bad_batches(tmp_path, payload, fragment):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=2)
    with pytest.raises(DataError, match=f"data_batch_1: .*{fragment}"):
        read_cifar_batch(path)


def test_cifar_truncated_and_missing(tmp_path):
    make_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="test_batch: expected a pickled CIFAR-10 batch"):
        load_cifar10(tmp_path)
    make_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(DataError, match="missing data_batch_3"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="no test_batch"):
        load_cifar10(tmp_path / "empty")
