"""Argument checks shared by every op: each error names the offending value, dtype and shape."""
from __future__ import annotations

REDUCTIONS = ("mean", "sum", "none")


SUPPORTED_FLOATS = ("float16", "float32", "float64")
_SUPPORTED_CHARS = "efd"  # dtype.char of float16, float32, float64 (cheaper to test than dtype.name)


def require_floating(x, name: str = "x"):
    """float16, float32 or float64, on every device (the kernels are compiled for exactly these)."""
    if x.dtype.char in _SUPPORTED_CHARS:
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


def require_labels(xp, labels, n_rows: int, n_classes: int, ignore_index: int, check_range: bool = True):
    """Labels are a 1-D integer array of one entry per row, each in [0, C) or equal to ``ignore_index``."""
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype} with shape {tuple(labels.shape)}")
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"labels must have shape ({n_rows},) to match logits with {n_rows} rows, got {tuple(labels.shape)}")
    if check_range:
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
        if bool(bad.any()):
            row = int(xp.argmax(bad))
            raise_label_out_of_range(row, int(labels[row]), n_classes, ignore_index)


def raise_label_out_of_range(row: int, value: int, n_classes: int, ignore_index: int):
    raise ValueError(
        f"label {value} at row {row} is out of range: labels must lie in [0, {n_classes}) "
        f"or equal ignore_index={ignore_index}"
    )
