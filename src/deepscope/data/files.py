"""Datasets read from local files: MNIST-style IDX files and the CIFAR-10 python batches.

IDX (LeCun et al., "Gradient-based learning applied to document recognition", 1998; the
format of the MNIST distribution): a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then
``ndim`` big-endian uint32 dimensions, then the big-endian data in row-major order. MNIST
images are type 0x08 (unsigned byte) with 3 dims (magic 0x00000803), labels unsigned byte
with 1 dim (magic 0x00000801). Files may be gzip-compressed (recognized by their content).
Fashion-MNIST and KMNIST ship in the same format and load the same way.

CIFAR-10 (Krizhevsky, "Learning multiple layers of features from tiny images", 2009), python
version: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a pickled dict with
``b'data'`` (N, 3072) uint8 -- 1024 red, 1024 green, 1024 blue values, each a row-major
32x32 plane -- and ``b'labels'`` (N ints in 0..9). The pickles are read by an unpickler that
only resolves numpy array reconstruction and plain containers; any other global in the file
is refused with a DataError, so a tampered batch cannot run code.

Pixels are scaled to [0, 1] (divided by 255); standardization, subsets and label noise are
then applied by :func:`deepscope.data.load_dataset` like for every other dataset.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deepscope.data._spec import DatasetDef, Splits, check_bool, check_int
from deepscope.data.transforms import rng_for, stratified_indices
from deepscope.errors import ConfigError, DataError

__all__ = ["read_idx", "read_cifar_batch", "load_mnist_idx", "load_cifar10",
           "MNIST_IDX", "CIFAR10", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC"]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAGIC_NAMES = {IDX_IMAGES_MAGIC: "unsigned-byte images with 3 dims",
                IDX_LABELS_MAGIC: "unsigned-byte labels with 1 dim"}
_MNIST_FILES = {"train_images": "train-images-idx3-ubyte",
                "train_labels": "train-labels-idx1-ubyte",
                "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_FEATURES = 3 * 32 * 32


# ---------------------------------------------------------------------------- IDX

def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path.name}: expected a complete gzip stream, got a corrupt or "
                            f"truncated one ({exc})") from exc
    return raw


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (plain or gzipped) into a native-endian numpy array.

    ``expected_magic`` (e.g. :data:`IDX_IMAGES_MAGIC`) makes any other magic number a
    DataError. Headers that do not describe the payload exactly (truncated data, trailing
    bytes, unknown type code) raise DataError naming the file and what was expected.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path.name}: truncated IDX file: expected a 4-byte magic number, "
                        f"got {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path.name}: expected IDX magic number 0x{expected_magic:08x} "
                        f"({_MAGIC_NAMES.get(expected_magic, 'IDX')}), got 0x{magic:08x}")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataError(f"{path.name}: expected an IDX magic number 0x0000TTDD (type TT in "
                        f"{', '.join(f'{t:02x}' for t in _IDX_TYPES)}, DD >= 1 dims), "
                        f"got 0x{magic:08x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path.name}: truncated IDX header: expected {header} bytes for "
                        f"{ndim} dimensions, got {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    need = count * dtype.itemsize
    got = len(raw) - header
    if got != need:
        what = "truncated" if got < need else "trailing bytes in"
        raise DataError(f"{path.name}: {what} IDX data: expected {need} bytes for shape "
                        f"{tuple(dims)}, got {got}")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find_mnist_files(path: Path) -> dict[str, Path]:
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise DataError(f"MNIST folder {str(path)!r} does not exist: expected a folder "
                        f"holding {', '.join(_MNIST_FILES.values())} (optionally .gz)")
    found = {}
    for role, base in _MNIST_FILES.items():
        dotted = base.replace("-idx", ".idx")
        for cand in (base, base + ".gz", dotted, dotted + ".gz"):
            if (folder / cand).is_file():
                found[role] = folder / cand
                break
        else:
            raise DataError(f"{folder}: no {base} or {base}.gz: expected the four MNIST IDX "
                            f"files {', '.join(_MNIST_FILES.values())}")
    return found


def _read_mnist_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path.name} holds {images.shape[0]} images but "
                        f"{labels_path.name} holds {labels.shape[0]} labels: expected equal")
    return images, labels.astype(np.int64)


def _to_unit(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    x /= np.float32(255.0)
    return x


def _subset(spec: dict[str, Any], key: str, y: np.ndarray, where: str) -> np.ndarray:
    n = spec[key]
    if n is None:
        return np.arange(y.shape[0])
    if n > y.shape[0]:
        raise ConfigError(f"dataset {spec['name']!r}: {key} must be <= {y.shape[0]} "
                          f"({where}), got {n}")
    return stratified_indices(y, n, rng_for(spec["seed"], f"{spec['name']}/{key}"))


def _complete_path(spec: dict[str, Any]) -> None:
    path = spec["path"]
    if path is None:
        raise ConfigError(f"dataset {spec['name']!r} reads local files: expected a 'path' "
                          f"to their folder, got None")
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"dataset {spec['name']!r}: path must be a string, got {path!r}")
    spec["path"] = os.fspath(path)
    check_bool(spec, "flat")


def _complete_mnist(spec: dict[str, Any]) -> None:
    _complete_path(spec)
    if spec["num_classes"] is not None:
        check_int(spec, "num_classes", minimum=2)


def _build_mnist(spec: dict[str, Any]) -> Splits:
    files = _find_mnist_files(Path(spec["path"]).expanduser())
    x_tr, y_tr = _read_mnist_split(files["train_images"], files["train_labels"])
    x_te, y_te = _read_mnist_split(files["test_images"], files["test_labels"])
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{files['train_images'].name} has images of shape {x_tr.shape[1:]} "
                        f"but {files['test_images'].name} {x_te.shape[1:]}: expected equal")
    top = int(max(y_tr.max(initial=0), y_te.max(initial=0)))
    num_classes = spec["num_classes"] if spec["num_classes"] is not None else max(top + 1, 2)
    if top >= num_classes:
        raise DataError(f"{files['train_labels'].name}/{files['test_labels'].name}: labels "
                        f"expected in 0..{num_classes - 1}, got up to {top}")
    tr = _subset(spec, "n_train", y_tr, f"images in {files['train_images'].name}")
    te = _subset(spec, "n_test", y_te, f"images in {files['test_images'].name}")
    rows, cols = x_tr.shape[1:]
    shape = (-1, rows * cols) if spec["flat"] else (-1, 1, rows, cols)
    return Splits(x_train=_to_unit(x_tr[tr]).reshape(shape), y_train=y_tr[tr],
                  x_test=_to_unit(x_te[te]).reshape(shape), y_test=y_te[te],
                  task="classification", num_classes=num_classes)


MNIST_IDX = DatasetDef(
    name="mnist-idx",
    summary="MNIST-format IDX files (train-/t10k- images and labels, .gz or plain)",
    defaults={"path": None, "flat": True, "num_classes": None},
    complete=_complete_mnist,
    task=lambda spec: "classification",
    build=_build_mnist,
)


# ---------------------------------------------------------------------------- CIFAR-10

def _numpy_global(modules: tuple[str, ...], name: str) -> Any:
    import importlib
    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise DataError(f"this numpy has no {name}; cannot rebuild pickled arrays")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3 protocol-2 pickles call to rebuild ``bytes``; only latin-1 is allowed."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise DataError(f"pickle asked to encode with {encoding!r}: expected latin1")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction and builtin containers; refuses the rest."""

    _ARRAY = {"_reconstruct": ("numpy._core.multiarray", "numpy.core.multiarray"),
              "_frombuffer": ("numpy._core.numeric", "numpy.core.numeric")}
    _BUILTINS = {"dict": dict, "list": list, "bytes": bytes, "str": str}

    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if name in self._ARRAY and module in self._ARRAY[name]:
            return _numpy_global(self._ARRAY[name], name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("builtins", "__builtin__") and name in self._BUILTINS:
            return self._BUILTINS[name]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise DataError(f"{self._source}: refusing to unpickle {module}.{name}: expected only "
                        f"numpy arrays, dicts, lists, bytes and str in a CIFAR-10 batch")

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._source}: pickle uses persistent ids: expected a plain "
                        f"CIFAR-10 batch")


def _field(batch: dict, key: str) -> Any:
    for k in (key.encode("ascii"), key):
        if k in batch:
            return batch[k]
    return None


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> ``(data (N, 3072) uint8, labels (N,) int64)``.

    Uses a restricted unpickler (see the module docstring); a file that is not a pickled
    dict with a uint8 ``data`` array of 3072 columns and ``labels`` in 0..9 raises DataError.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), path.name).load()
    except DataError:
        raise
    except Exception as exc:  # any parse failure of untrusted bytes is a data problem
        raise DataError(f"{path.name}: expected a pickled CIFAR-10 batch, got unreadable "
                        f"data ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path.name}: expected a pickled dict, got {type(batch).__name__}")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _CIFAR_FEATURES:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise DataError(f"{path.name}: expected b'data' as a uint8 array of shape "
                        f"(N, {_CIFAR_FEATURES}), got {got}")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path.name}: b'labels' is not a list of integers ({exc})") from exc
    if labels is None or y.ndim != 1 or y.dtype.kind not in "iu" or y.shape[0] != data.shape[0]:
        raise DataError(f"{path.name}: expected b'labels' as {data.shape[0]} integers, got "
                        f"{'nothing' if labels is None else f'{y.dtype} of shape {y.shape}'}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path.name}: labels expected in 0..9, got {y.min()}..{y.max()}")
    return data, y.astype(np.int64)


def _cifar_folder(path: Path) -> Path:
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / _CIFAR_TEST).is_file():
            return folder
    raise DataError(f"{path}: no {_CIFAR_TEST}: expected a folder holding the CIFAR-10 python "
                    f"batches {', '.join(_CIFAR_TRAIN)}, {_CIFAR_TEST}")


def _build_cifar(spec: dict[str, Any]) -> Splits:
    folder = _cifar_folder(Path(spec["path"]).expanduser())
    missing = [name for name in _CIFAR_TRAIN if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}: expected all of "
                        f"{', '.join(_CIFAR_TRAIN)}")
    parts = [read_cifar_batch(folder / name) for name in _CIFAR_TRAIN]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = read_cifar_batch(folder / _CIFAR_TEST)
    tr = _subset(spec, "n_train", y_tr, "images in the five data batches")
    te = _subset(spec, "n_test", y_te, f"images in {_CIFAR_TEST}")
    shape = (-1, _CIFAR_FEATURES) if spec["flat"] else (-1, 3, 32, 32)
    return Splits(x_train=_to_unit(x_tr[tr]).reshape(shape), y_train=y_tr[tr],
                  x_test=_to_unit(x_te[te]).reshape(shape), y_test=y_te[te],
                  task="classification", num_classes=10)


CIFAR10 = DatasetDef(
    name="cifar10",
    summary="CIFAR-10 python batches (data_batch_1..5, test_batch), 32x32 RGB, 10 classes",
    defaults={"path": None, "flat": False},
    complete=_complete_path,
    task=lambda spec: "classification",
    build=_build_cifar,
)


# ---------------------------------------------------------------------------- entry points

def load_mnist_idx(path: str | os.PathLike, **options: Any):
    """Load MNIST-format IDX files from ``path`` (their folder, or one of the four files).

    ``options`` are dataset-spec keys (``flat``, ``standardize``, ``n_train``, ``n_test``,
    ``seed``, ``label_noise``, ``random_labels``, ``num_classes``); this is
    ``load_dataset({"name": "mnist-idx", "path": path, **options})``.
    """
    from deepscope.data.registry import load_dataset
    return load_dataset({"name": "mnist-idx", "path": os.fspath(path), **options})


def load_cifar10(path: str | os.PathLike, **options: Any):
    """Load the CIFAR-10 python batches from ``path`` (or its ``cifar-10-batches-py``).

    Inputs are (n, 3, 32, 32) float32 in [0, 1] before standardization (``flat=True`` gives
    (n, 3072)); this is ``load_dataset({"name": "cifar10", "path": path, **options})``.
    """
    from deepscope.data.registry import load_dataset
    return load_dataset({"name": "cifar10", "path": os.fspath(path), **options})
