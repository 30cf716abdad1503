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

import contextlib

from ..backend import device_of
from .checks import normalize_axis, require_floating, require_ndim, require_nonempty, require_same_shape
from .rows import from_rows, row_max, row_sum, to_rows


def _prepare(x, device, name="x"):
    dev = device_of(x, device)
    x = dev.asarray(x)
    require_floating(x, name)
    require_nonempty(x, name)
    return dev, x


def widened(x):
    """float16 is computed in float32 (as the kernels accumulate it) and rounded once at the end."""
    return x.astype("float32") if x.dtype.itemsize < 4 else x


# Row ops the CPU device may run compiled (gpunet.cpu_kernels): kernel name -> (op, options).
_COMPILED = {"softmax_forward": ("softmax", {"log": False}), "log_softmax_forward": ("softmax", {"log": True}),
             "softmax_backward": ("softmax_backward", {"log": False}),
             "log_softmax_backward": ("softmax_backward", {"log": True})}


def _rowwise(dev, kernel_name, block_fn, axis, *arrays):
    """Run a row op on ``arrays`` viewed as contiguous (rows, C) along ``axis``: the device's kernel where it
    has kernels, else over row blocks its compiled block function where it has one, or ``block_fn(*inputs, out)``
    (the NumPy path)."""
    xp = dev.xp
    rows, layout = [], None
    for a in arrays:
        r, layout = to_rows(xp, a, axis)
        rows.append(r)
    if dev.kernels is not None:
        out = getattr(dev.kernels, kernel_name)(*rows)
    else:
        dtype = rows[0].dtype
        rows = [widened(r) for r in rows]
        out = xp.empty_like(rows[0])
        op, options = _COMPILED.get(kernel_name, (None, {}))
        compiled = dev.compiled_block(op, rows[0].dtype, **options) if op else None
        if compiled is not None:
            compiled(*rows, out)
        else:
            dev.map_rows(quietly(xp, block_fn(xp)), rows, [out])
        with _quiet(xp):  # float16: values past its range become inf, as the kernels' conversion does
            out = out.astype(dtype, copy=False)
    return from_rows(xp, out, layout)


def _softmax_block(xp):
    def run(x, y):
        xp.subtract(x, row_max(xp, x), out=y)
        xp.exp(y, out=y)
        y /= row_sum(xp, y)
    return run


def _log_softmax_block(xp):
    def run(x, y):
        xp.subtract(x, row_max(xp, x), out=y)
        y -= xp.log(row_sum(xp, xp.exp(y)))
    return run


def _softmax_backward_block(xp):
    def run(y, dy, dx):
        xp.multiply(dy, y, out=dx)
        xp.subtract(dy, row_sum(xp, dx), out=dx)
        dx *= y
    return run


def _log_softmax_backward_block(xp):
    def run(logy, dy, dx):
        xp.exp(logy, out=dx)
        dx *= row_sum(xp, dy)
        xp.subtract(dy, dx, out=dx)
    return run


def softmax(x, axis: int = -1, device=None):
    """Numerically stable softmax along ``axis``."""
    dev, x = _prepare(x, device)
    return _rowwise(dev, "softmax_forward", _softmax_block, normalize_axis(axis, x.ndim), x)


def _prepare_pair(y, dy, device, name):
    """The forward output and the incoming gradient of a backward: same device, same shape, floating."""
    dev, y = _prepare(y, device, name)
    dy = dev.asarray(dy)
    require_floating(dy, "dy")
    require_same_shape(y, dy, (name, "dy"))
    return dev, y, dy


def softmax_backward(y, dy, axis: int = -1, device=None):
    """``dx = y * (dy - sum(dy * y, axis))``: the softmax Jacobian applied to ``dy``, never built."""
    dev, y, dy = _prepare_pair(y, dy, device, "y")
    return _rowwise(dev, "softmax_backward", _softmax_backward_block, normalize_axis(axis, y.ndim), y, dy)


def softmax_jacobian(y, device=None):
    """The explicit Jacobian ``diag(y) - y y^T``: (C, C) for a vector ``y``, (N, C, C) for a batch (N, C)."""
    dev, y = _prepare(y, device, "y")
    require_ndim(y, (1, 2), "y")
    xp = dev.xp
    outer = y[..., :, None] * y[..., None, :]
    eye = xp.eye(y.shape[-1], dtype=y.dtype)
    return eye * y[..., None, :] - outer


def log_softmax(x, axis: int = -1, device=None):
    """``x - m - log(sum(exp(x - m)))``: finite for any finite logits, however large."""
    dev, x = _prepare(x, device)
    return _rowwise(dev, "log_softmax_forward", _log_softmax_block, normalize_axis(axis, x.ndim), x)


def log_softmax_backward(logy, dy, axis: int = -1, device=None):
    """``dx = dy - exp(logy) * sum(dy, axis)``: the log-softmax Jacobian ``I - 1 y^T`` applied to ``dy``."""
    dev, logy, dy = _prepare_pair(logy, dy, device, "logy")
    return _rowwise(dev, "log_softmax_backward", _log_softmax_backward_block, normalize_axis(axis, logy.ndim),
                    logy, dy)


def quietly(xp, fn):
    """``fn`` under ``_quiet`` in whichever thread runs it (NumPy's error state is per thread)."""
    def run(*args):
        with _quiet(xp):
            fn(*args)
    return run


def _quiet(xp):
    """Silence NumPy's floating-point warnings for the documented -inf/NaN cases; CuPy never warns."""
    errstate = getattr(xp, "errstate", None)
    if errstate is None:
        return contextlib.nullcontext()
    return errstate(invalid="ignore", over="ignore", divide="ignore")
