"""CIFAR-10 from the official "python version" batches (``data_batch_1..5``, ``test_batch``).

Each batch is a pickled dict with ``b"data"`` (N x 3072 uint8, channel-major 32x32 RGB) and ``b"labels"``. The files
are untrusted input, so the unpickler:

- admits only what those files use (NumPy's ``_reconstruct``, ``ndarray`` as its argument, ``dtype``, ``scalar``,
  and ``_codecs.encode`` / ``bytes`` as Python 3 writes bytes at protocol 2), each through a wrapper that accepts
  only the arguments those files pass: no code runs;
- bounds what it builds: the bytes decoded by ``_codecs.encode`` (latin-1 only) and the arrays ``_reconstruct``
  allocates share one budget of the file's own size, so no chain of calls can grow a small file into a large one;
- is the pure-Python one, whose memo is a dict: a corrupted memo index cannot make it allocate a huge table.

Every failure, whatever the unpickler or NumPy raised, is a DatasetError naming the file.
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np
from .idx import DatasetError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
IMAGE_BYTES = 3 * 32 * 32
# Room beyond the file's size for the few small objects a batch builds besides its pixels.
BUDGET_SLACK = 1 << 16

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct, whichever this NumPy has
_SCALAR = np.float64(0).__reduce__()[0]     # numpy.(_)core.multiarray.scalar
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}
_NUMERIC_KINDS = "biuf"
_BYTE_ORDERS = {"<", ">", "|", "=", b"<", b">", b"|", b"="}


class _NdarrayToken:
    """What ``numpy.ndarray`` unpickles to: only ``_reconstruct`` accepts it, and it cannot be called (calling the
    real class, or NEWOBJ on it, would allocate whatever shape the file names)."""


_NDARRAY = _NdarrayToken()


class _BudgetExceeded(Exception):
    pass


class _SafeUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, budget: int):
        super().__init__(file, encoding="bytes")
        self.budget = budget

    def spend(self, nbytes: int) -> None:
        self.budget -= nbytes
        if self.budget < 0:
            raise _BudgetExceeded("it builds more data than the file holds")

    def load_build(self):
        """BUILD (``obj.__setstate__(state)``) for the two objects a batch builds that way, with only the states
        NumPy writes for them: a dtype's state can otherwise set flags that make NumPy treat bytes as pointers."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            plain = (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in _BYTE_ORDERS
                     and state[2:] == (None, None, None, -1, -1, 0))
            if not plain:
                raise pickle.UnpicklingError("a dtype state other than a plain number type's")
        elif isinstance(inst, np.ndarray):
            plain = (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[1], tuple)
                     and all(type(n) is int for n in state[1]) and isinstance(state[2], np.dtype)
                     and state[2].kind in _NUMERIC_KINDS and state[3] in (0, 1) and isinstance(state[4], bytes))
            if not plain:
                raise pickle.UnpicklingError("an array state other than a plain number array's")
        else:
            raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__}")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module, name):
        if module in _MULTIARRAY and name == "_reconstruct":
            return self._reconstruct
        if module in _MULTIARRAY and name == "scalar":
            return self._scalar
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return self._dtype
        if (module, name) == ("_codecs", "encode"):
            return self._encode
        if module in ("__builtin__", "builtins") and name == "bytes":
            return self._bytes
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")

    def _reconstruct(self, subtype, shape, typecode):
        if subtype is not _NDARRAY or not isinstance(shape, tuple) or not all(type(n) is int for n in shape):
            raise pickle.UnpicklingError("_reconstruct called with arguments a NumPy array's pickle never has")
        dtype = self._dtype(typecode)
        self.spend(math.prod(max(n, 0) for n in shape) * dtype.itemsize)
        return _RECONSTRUCT(np.ndarray, shape, dtype)

    def _dtype(self, spec, align=False, copy=True):
        if not isinstance(spec, (str, bytes)) or len(spec) > 8:
            raise pickle.UnpicklingError(f"dtype {spec!r} is not a plain type code")
        dtype = np.dtype(spec.decode("ascii") if isinstance(spec, bytes) else spec, bool(align), True)
        if dtype.kind not in _NUMERIC_KINDS:
            raise pickle.UnpicklingError(f"dtype {dtype} refused: a CIFAR-10 batch holds numbers only")
        return dtype

    def _scalar(self, dtype, data=None):
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
            raise pickle.UnpicklingError("scalar called with arguments a NumPy scalar's pickle never has")
        return _SCALAR(dtype, data)

    def _encode(self, text, encoding="utf-8", errors="strict"):
        if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1:
            raise pickle.UnpicklingError("_codecs.encode is admitted only as Python 3 pickles bytes: a str to latin-1")
        self.spend(len(text))
        return text.encode("latin-1")

    def _bytes(self, *args):
        if args:
            raise pickle.UnpicklingError("bytes is admitted only without arguments (an empty bytes object)")
        return b""


def read_batch(path):
    """One batch file -> (images float32 (N, 3072) in [0, 1], labels int64 (N,))."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch not found: {path}")
    raw = path.read_bytes()
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), budget=len(raw) + BUDGET_SLACK).load()
        return _images_and_labels(path, batch)
    except DatasetError:
        raise
    except Exception as exc:  # whatever a corrupt or hostile pickle makes the unpickler or NumPy raise
        raise DatasetError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {_short(exc)})") from exc


def _images_and_labels(path, batch):
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DatasetError(f"{path}: data must be uint8 of shape (N, {IMAGE_BYTES}), got "
                           f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if not isinstance(labels, (list, np.ndarray)):
        raise DatasetError(f"{path}: labels must be a list of integers, got {type(labels).__name__}")
    if isinstance(labels, list) and not all(type(v) is int for v in labels):
        raise DatasetError(f"{path}: labels must be integers")
    if len(labels) != data.shape[0]:
        raise DatasetError(f"{path}: {data.shape[0]} images but {len(labels)} labels")
    if isinstance(labels, np.ndarray) and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise DatasetError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) and (min(labels) < 0 or max(labels) > 9):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {int(min(labels))}..{int(max(labels))}")
    return data.astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64)


def load_cifar10(root):
    """Return ``(x_train, y_train, x_test, y_test)`` from a ``cifar-10-batches-py`` folder (no split empty)."""
    root = Path(root)
    parts = [read_batch(root / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(root / TEST_BATCH)
    x_train, y_train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    for split, x in (("training", x_train), ("test", x_test)):
        if len(x) == 0:
            raise DatasetError(f"{root}: the {split} split is empty (0 images)")
    return x_train, y_train, x_test, y_test


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
