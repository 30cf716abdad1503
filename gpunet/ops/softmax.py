"""Softmax and log-softmax, forward and backward, written once for every device.

Forward, per row: ``y_i = exp(x_i - m) / sum_j exp(x_j - m)`` with ``m = max_j x_j``. Subtracting the row max
changes nothing mathematically (it cancels) but keeps ``exp`` from overflowing for logits like 1e4. A row that
holds ``-inf`` gets 0 there; a row of nothing but ``-inf`` has no distribution and gives NaN, on every device
(the same choice as PyTorch).

Backward: the Jacobian of softmax is ``J = diag(y) - y y^T`` (``dy_i/dx_j = y_i (delta_ij - y_j)``). It is
symmetric, so the vector-Jacobian product is ``dx = J dy = y * dy - y (y . dy) = y * (dy - sum(dy * y))``:
O(C) per row instead of the O(C^2) that materialising ``J`` would cost. ``softmax_jacobian`` builds ``J``
anyway, for teaching and for the tests that check the product against it.
"""
from __future__ import annotations

from ..kinds import RowOp
from .checks import checked_out, normalize_axis, on_device, pair_on_device, require_ndim
from .rows import from_rows, row_max, row_sum, to_rows

__all__ = ["softmax", "softmax_backward", "softmax_jacobian", "log_softmax", "log_softmax_backward"]


# The NumPy forms, over a block of contiguous rows (in float32 or wider), writing the last argument.
def _softmax_rows(xp, x, y):
    xp.subtract(x, row_max(xp, x), out=y)
    xp.exp(y, out=y)
    y /= row_sum(xp, y)


def _log_softmax_rows(xp, x, y):
    xp.subtract(x, row_max(xp, x), out=y)
    y -= xp.log(row_sum(xp, xp.exp(y)))


def _softmax_backward_rows(xp, y, dy, dx):
    xp.multiply(dy, y, out=dx)
    xp.subtract(dy, row_sum(xp, dx), out=dx)
    dx *= y


def _log_softmax_backward_rows(xp, logy, dy, dx):
    xp.exp(logy, out=dx)
    dx *= row_sum(xp, dy)
    xp.subtract(dy, dx, out=dx)


SOFTMAX = RowOp("softmax_forward", "softmax", _softmax_rows, compiled=True)
LOG_SOFTMAX = RowOp("log_softmax_forward", "softmax", _log_softmax_rows, compiled=True)
SOFTMAX_BACKWARD = RowOp("softmax_backward", "softmax", _softmax_backward_rows, compiled=True, cached_arrays=2)
LOG_SOFTMAX_BACKWARD = RowOp("log_softmax_backward", "softmax", _log_softmax_backward_rows, compiled=True,
                             cached_arrays=2)


def _rowwise(dev, op, axis, *arrays, out=None):
    """Run row op ``op`` on ``arrays`` viewed as contiguous (rows, C) along ``axis``, the layout every form reads;
    into ``out`` where given (written in place when ``axis`` is the last, else through one temporary)."""
    xp = dev.xp
    if out is not None:
        checked_out(out, arrays[0], dev, *arrays, may_be_input=False)
        if axis == out.ndim - 1:
            dev.run(op, *(to_rows(xp, a, axis)[0] for a in arrays), out=out.reshape(-1, out.shape[-1]))
            return out
    rows, layout = [], None
    for a in arrays:
        r, layout = to_rows(xp, a, axis)
        rows.append(r)
    result = from_rows(xp, dev.run(op, *rows), layout)
    if out is None:
        return result
    out[...] = result
    return out


def softmax(x, axis: int = -1, device=None, out=None):
    """Numerically stable softmax along ``axis``, into ``out`` where given (an array of ``x``'s shape and dtype,
    apart from ``x``: reusing one saves a new array's page faults, as much time as the op itself on large rows)."""
    dev, x = on_device(x, device, nonempty=True)
    return _rowwise(dev, SOFTMAX, normalize_axis(axis, x.ndim), x, out=out)


def softmax_backward(y, dy, axis: int = -1, device=None, out=None):
    """``dx = y * (dy - sum(dy * y, axis))``: the softmax Jacobian applied to ``dy``, never built (into ``out``
    where given, as :func:`softmax`)."""
    dev, y, dy = pair_on_device(y, dy, device, "y", nonempty=True)
    return _rowwise(dev, SOFTMAX_BACKWARD, normalize_axis(axis, y.ndim), y, dy, out=out)


def softmax_jacobian(y, device=None):
    """The explicit Jacobian ``diag(y) - y y^T``: (C, C) for a vector ``y``, (N, C, C) for a batch (N, C)."""
    dev, y = on_device(y, device, "y", nonempty=True)
    require_ndim(y, (1, 2), "y")
    xp = dev.xp
    outer = y[..., :, None] * y[..., None, :]
    eye = xp.eye(y.shape[-1], dtype=y.dtype)
    return eye * y[..., None, :] - outer


def log_softmax(x, axis: int = -1, device=None, out=None):
    """``x - m - log(sum(exp(x - m)))``: finite for any finite logits, however large (into ``out`` where given,
    as :func:`softmax`)."""
    dev, x = on_device(x, device, nonempty=True)
    return _rowwise(dev, LOG_SOFTMAX, normalize_axis(axis, x.ndim), x, out=out)


def log_softmax_backward(logy, dy, axis: int = -1, device=None, out=None):
    """``dx = dy - exp(logy) * sum(dy, axis)``: the log-softmax Jacobian ``I - 1 y^T`` applied to ``dy`` (into
    ``out`` where given, as :func:`softmax`)."""
    dev, logy, dy = pair_on_device(logy, dy, device, "logy", nonempty=True)
    return _rowwise(dev, LOG_SOFTMAX_BACKWARD, normalize_axis(axis, logy.ndim), logy, dy, out=out)
