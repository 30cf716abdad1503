"""Rows: moving an arbitrary softmax axis to contiguous rows (the one layout every form reads: kernels ignore
strides), and the row reductions the NumPy forms use."""
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


SHORT_ROW = 32


def row_max(xp, x):
    """Max of each row of a 2-D ``x``, as a column. Rows of up to 32 are reduced column by column: NumPy
    vectorises an elementwise maximum over a column far better than a reduction over a row of 10."""
    return _row_reduce(x, "max", xp.maximum)


def row_sum(xp, x):
    """Sum of each row of a 2-D ``x``, as a column (column by column for short rows, as ``row_max``)."""
    return _row_reduce(x, "sum", xp.add)


def _row_reduce(x, method: str, ufunc):
    if x.shape[1] > SHORT_ROW:
        return getattr(x, method)(axis=1, keepdims=True)
    out = x[:, 0].copy()
    for j in range(1, x.shape[1]):
        ufunc(out, x[:, j], out=out)
    return out[:, None]
