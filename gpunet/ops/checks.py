"""Argument checks shared by every op: each error names the offending value, dtype and shape."""
from __future__ import annotations

import math

import numpy

from .. import dtypes
from ..devices import device_of
from ..errors import label_out_of_range

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


REDUCTIONS = ("mean", "sum", "none")


SUPPORTED_FLOATS = dtypes.NAMES


def require_floating(x, name: str = "x"):
    """One of ``gpunet.dtypes``' floats, on every device (the kernels are compiled for exactly these)."""
    if x.dtype.char in dtypes.CHARS:
        return
    if x.dtype.kind != "f":
        raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype} with shape {tuple(x.shape)}")
    if x.dtype.name not in SUPPORTED_FLOATS:
        raise ValueError(f"{name} has dtype {x.dtype}, which gpunet does not support: use one of {SUPPORTED_FLOATS}")


def require_nonempty(x, name: str = "x"):
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): an op needs at least one element")


def require_ndim(x, ndims, name: str = "x"):
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {want} dimension(s), got shape {tuple(x.shape)}")


def require_same_shape(a, b, names=("y", "dy")):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {ndim} dimension(s)")
    return axis % ndim


def require_reduction(reduction: str):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def require_labels(labels, n_rows: int):
    """Labels are a 1-D integer array of one entry per row (their range is checked where the loss runs: the
    devices check it, a GPU's kernels through an error word)."""
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype} with shape {tuple(labels.shape)}")
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"labels must have shape ({n_rows},) to match logits with {n_rows} rows, got {tuple(labels.shape)}")


def require_int64(value, name: str):
    """An integer (not a bool) that fits int64, as every kernel takes it."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if not INT64_MIN <= int(value) <= INT64_MAX:
        raise ValueError(f"{name} = {int(value)} does not fit int64: labels are compared as int64 on every device")


def require_divisor(value, name: str):
    """What a mean may be divided by. A Python or NumPy number must be positive and finite (returned as a float):
    a bool or a string is a ``TypeError``; 0, negative, NaN or inf a ``ValueError``. A 0-d real array (on any
    device) is a divisor computed by the caller (data parallelism's global one, ``softmax_cross_entropy_divisor``)
    and is returned as it is: reading its value would be a host sync per step on a GPU; a zero there gives
    PyTorch's 0 / 0 = NaN mean, as one process would."""
    dtype = getattr(value, "dtype", None)
    is_real = (dtype.kind in "iuf" and getattr(value, "ndim", 0) == 0) if dtype is not None else (
        isinstance(value, (int, float)) and not isinstance(value, bool))
    if not is_real:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")
    if hasattr(value, "ndim") and not isinstance(value, numpy.generic):  # an array, not a NumPy number
        return value
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {number!r}")
    return number


def require_smoothing(value) -> float:
    """label_smoothing: a real number in [0, 1], as PyTorch takes it."""
    if type(value) is float and 0.0 <= value <= 1.0:  # the common case, at every call: no more checks
        return value
    is_bool = isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"
    if is_bool or isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"label_smoothing must be a real number, got {type(value).__name__}: {value!r}")
    number = float(value)
    if not (0.0 <= number <= 1.0):  # NaN fails too
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {number!r}")
    return number


def labels_as_int64(xp, labels, n_classes: int, ignore_index: int):
    """Labels of any integer kind as int64, the one type every form reads. An unsigned label past int64's range
    can be no class and no ignore_index: it is out of range, named as given (converted, it would wrap to a
    negative number, and could even meet ignore_index)."""
    if labels.dtype.kind == "u" and labels.dtype.itemsize == 8 and bool((labels > INT64_MAX).any()):
        bad = labels >= n_classes  # unsigned: no label is negative; the first bad row, as the devices name it
        if ignore_index >= 0:
            bad &= labels != ignore_index
        row = int(xp.argmax(bad))
        raise label_out_of_range(row, int(labels[row]), n_classes, ignore_index)
    return labels.astype(xp.int64, copy=False)


def promoted(xp, *arrays):
    """Floating arrays of mixed dtypes, each converted to their common dtype (NumPy's promotion: float32 with
    float64 is float64). Every device then computes in that one dtype, so mixed inputs give the same answer on
    each and no kernel ever reads a buffer as a dtype it is not."""
    dtype = arrays[0].dtype
    if all(a.dtype == dtype for a in arrays[1:]):
        return arrays
    common = xp.result_type(*arrays)
    return tuple(a.astype(common, copy=False) for a in arrays)


def native(x):
    """``x`` in the machine's byte order (a byte-swapped array, say from a big-endian file, converted once), the
    only order the kernels read."""
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def on_device(x, device, name: str = "x", nonempty: bool = False):
    """``(dev, x)``: the op's device (``device``, else the one ``x`` lives on) and ``x`` as its floating array."""
    dev = device_of(x, device)
    x = native(dev.asarray(x))
    require_floating(x, name)
    if nonempty:
        require_nonempty(x, name)
    return dev, x


def pair_on_device(y, dy, device, name: str = "y", nonempty: bool = False):
    """``(dev, y, dy)`` for a backward: one device, one shape, floating, promoted to one dtype."""
    dev, y = on_device(y, device, name, nonempty)
    dy = native(dev.asarray(dy))
    require_floating(dy, "dy")
    require_same_shape(y, dy, (name, "dy"))
    return (dev, *promoted(dev.xp, y, dy))


def writable_like(out, like, dev) -> bool:
    """True when ``out`` can take a result like ``like`` (CuPy arrays are always writable)."""
    return (dev.owns(out) and out.shape == like.shape and out.dtype == like.dtype and out.flags.c_contiguous
            and getattr(out.flags, "writeable", True))


def _data_pointer(a) -> int:
    return a.data.ptr if hasattr(a.data, "ptr") else a.ctypes.data  # CuPy, NumPy


def checked_out(out, like, dev, *inputs, may_be_input: bool = True, name: str = "out"):
    """``out`` checked as a place for a result like ``like``: an array of the same device, shape and dtype,
    C-contiguous and writable. Where ``may_be_input`` (pointwise ops, which read each element before they write
    it), it may be exactly one of the inputs; otherwise (row ops, which read a row again after writing part of
    it) it must lie apart from every input. An ``out`` shifted against an input is refused either way: it would
    read elements already written."""
    if not writable_like(out, like, dev):  # first: the overlap test below takes only this device's arrays
        raise ValueError(f"{name} must be a writable, C-contiguous {like.dtype} array of shape {tuple(like.shape)} "
                         f"on {dev.name}; got {type(out).__name__} {getattr(out, 'dtype', '')}"
                         f"{tuple(getattr(out, 'shape', ()))}")
    for a in inputs:
        if may_be_input and out is a:  # the in-place call of nn.ReLU: nothing to look at
            continue
        if not dev.xp.may_share_memory(out, a):
            continue
        if not may_be_input:
            raise ValueError(f"{name} may overlap an input (their memory ranges meet): this op reads its inputs "
                             "again after it writes, so it needs an array apart from them")
        if not (_data_pointer(out) == _data_pointer(a) and out.strides == a.strides):
            raise ValueError(f"{name} overlaps an input without being it: pass the input itself or an array apart")
    return out
