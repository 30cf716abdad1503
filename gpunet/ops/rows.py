"""Moving an arbitrary softmax axis to contiguous rows, the one layout the kernels read (they ignore strides)."""
from __future__ import annotations


def to_rows(xp, x, axis: int):
    """``x`` with ``axis`` last, as a C-contiguous (rows, C) array, and what ``from_rows`` needs to undo it."""
    moved = xp.moveaxis(x, axis, -1) if axis != x.ndim - 1 else x
    shape = moved.shape
    rows = xp.ascontiguousarray(moved).reshape(-1, shape[-1])
    return rows, (shape, axis, x.ndim)


def from_rows(xp, rows, layout):
    shape, axis, ndim = layout
    out = rows.reshape(shape)
    return xp.moveaxis(out, -1, axis) if axis != ndim - 1 else out
