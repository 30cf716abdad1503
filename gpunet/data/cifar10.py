"""CIFAR-10 from the official "python version" batches (``data_batch_1..5``, ``test_batch``).

Each batch is a pickled dict with ``b"data"`` (N x 3072 uint8, channel-major 32x32 RGB) and ``b"labels"``. The
unpickler admits only the few NumPy constructors those files use, so a hostile file cannot run code.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from .idx import DatasetError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def read_batch(path):
    """One batch file -> (images float32 (N, 3072) in [0, 1], labels int64 (N,))."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch not found: {path}")
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: not a readable CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: data must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {int(labels.min())}..{int(labels.max())}")
    return data.astype(np.float32) / 255.0, labels


def load_cifar10(root):
    """Return ``(x_train, y_train, x_test, y_test)`` from a ``cifar-10-batches-py`` folder."""
    root = Path(root)
    parts = [read_batch(root / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(root / TEST_BATCH)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test)
