"""Softmax cross-entropy, fused: the loss from log-softmax, the gradient straight from the probabilities.

For one row with logits ``x``, probabilities ``p = softmax(x)`` and true class ``t``, the loss is
``L = -log p_t = logsumexp(x) - x_t``. Its gradient needs no Jacobian at all:
``dL/dx_j = p_j - [j == t]``, i.e. ``p - onehot(t)``. Averaged over the ``N`` rows that count (rows whose label
is ``ignore_index`` contribute nothing), the batch gradient is ``(p - y) / N``. Going through log-softmax keeps
the loss finite for logits like 1e4, where ``log(softmax(x))`` would give ``log(0) = -inf``.
"""
from __future__ import annotations

import functools

from ..devices import Op, device_of
from .checks import (checked_out, labels_as_int64, on_device, require_divisor, require_int64, require_labels,
                     require_ndim, require_reduction)
from ..numerics import quiet, wide_dtype
from .rows import row_max, row_sum

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_with_grad", "softmax_cross_entropy_backward",
           "scale_grad"]


# ---- the NumPy forms, over a block of rows (float32 or wider) --------------------------------------------------
def _cross_entropy_rows(xp, x, labels, row_scale, loss, out, ignore_index):
    """shifted = x - m; loss = (m - x[label]) + log s = log s - shifted[label]; p = exp(shifted) / s into ``out``,
    then, given ``row_scale``, the gradient ``(p - onehot) * row_scale`` in its place (0 for ignored rows)."""
    xp.subtract(x, row_max(xp, x), out=out)
    valid = labels != ignore_index
    rows = xp.arange(len(labels))
    picked = out[rows, xp.where(valid, labels, 0)]
    xp.exp(out, out=out)
    s = row_sum(xp, out)
    out /= s
    xp.subtract(xp.log(s[:, 0]), picked, out=loss)
    loss[~valid] = 0
    if row_scale is not None:
        _cross_entropy_backward_rows(xp, out, labels, row_scale, out, ignore_index)


def _cross_entropy_backward_rows(xp, probs, labels, scale, grad, ignore_index):
    """grad = (p - onehot) * scale, 0 for ignored rows: the label's p - 1 first (exact near p = 1, and -inf, not
    inf - inf = NaN, for an infinite scale), as every kernel computes it."""
    valid = labels != ignore_index
    rows, columns = xp.arange(len(labels)), xp.where(valid, labels, 0)
    if grad is not probs:
        grad[...] = probs
    grad[rows, columns] -= 1
    grad *= scale[:, None]
    grad[~valid] = 0


def _reduced_from_rows(xp, cross_entropy_rows, logits, labels, ignore_index, mean, check, count=None, out=None):
    """The "mean" or "sum" loss and its gradient from the per-row form: the gradient is scaled by ``1 / n_valid``
    as it is written (``n_valid``: ``count`` where given, else this batch's counted rows). ``1 / n_valid`` is inf
    when no row counts, harmless since ignored rows never use it (their gradient is 0 by rule), and it makes the
    mean loss ``0 / 0 = NaN``, as PyTorch's. The row losses (in the accumulation type) are summed in float64 and
    the result rounded once to the logits' dtype."""
    n_valid = (labels != ignore_index).sum() if count is None else count
    with quiet(xp):
        divisor = xp.asarray(n_valid, dtype=xp.float64)
        scale = xp.reciprocal(divisor) if mean else xp.ones((), dtype=xp.float64)
        grad_scale = scale.astype(wide_dtype(logits.dtype)).reshape(1)
    loss_rows, grad = cross_entropy_rows(logits, labels, ignore_index, grad_scale=grad_scale, check=check, out=out)
    total = loss_rows.sum(dtype=xp.float64)
    with quiet(xp):
        return rounded(total / divisor if mean else total, logits.dtype), grad


def rounded(value, dtype):
    """A float64 result (a NumPy scalar or a device array) rounded once to ``dtype``: past its range it is inf,
    without a warning (the reduction rule of docs/semantics.md)."""
    with quiet():
        return value.astype(dtype)


SOFTMAX_CROSS_ENTROPY = Op("softmax_cross_entropy", "cross_entropy", "cross_entropy", _cross_entropy_rows,
                           compiled=True)
SOFTMAX_CROSS_ENTROPY_REDUCED = Op("softmax_cross_entropy_reduced", "cross_entropy_reduced", "cross_entropy",
                                   _reduced_from_rows, compiled=True, base=SOFTMAX_CROSS_ENTROPY)
SOFTMAX_CROSS_ENTROPY_BACKWARD = Op("softmax_cross_entropy_backward", "cross_entropy_backward", "cross_entropy",
                                    _cross_entropy_backward_rows)


def _prepare(scores, labels, name, reduction, device, ignore_index, out=None):
    """Both arrays on the op's device, checked: (N, C) floating scores, (N,) integer labels as int64, a known
    reduction, an ``ignore_index`` that fits int64, an ``out`` (where given) that can take a result like the
    scores. The label range is checked where the loss runs (a GPU's kernels flag it without a sync of their
    own)."""
    dev, scores = on_device(scores, device, name, nonempty=True)
    labels = dev.asarray(labels)
    require_ndim(scores, 2, name)
    if out is not None:
        checked_out(out, scores, dev, scores, labels, may_be_input=False)
    require_reduction(reduction)
    require_labels(labels, scores.shape[0])
    require_int64(ignore_index, "ignore_index")
    return dev, scores, labels_as_int64(dev.xp, labels, scores.shape[1], ignore_index)


def softmax_cross_entropy(logits, labels, ignore_index: int = -100, reduction: str = "mean", device=None,
                          out=None):
    """Return ``(loss, probs)`` for (N, C) ``logits`` and (N,) integer ``labels``.

    ``reduction``: "mean" over the rows whose label is not ``ignore_index`` (NaN if there are none, as in
    PyTorch), "sum", or "none" (an (N,) array with 0 for ignored rows). The loss is a device array. ``out``: an
    array of the logits' shape and dtype, apart from them, that takes the probabilities (written in place for
    float32/64 logits; float16 on the CPU goes through a float32 temporary); a bad label leaves it as it was.
    """
    dev, logits, labels = _prepare(logits, labels, "logits", reduction, device, ignore_index, out)
    loss_rows, probs = dev.run(SOFTMAX_CROSS_ENTROPY, logits, labels, ignore_index, out=out)
    return _reduce(dev.xp, loss_rows, labels, ignore_index, reduction, logits.dtype), probs


def softmax_cross_entropy_with_grad(logits, labels, ignore_index: int = -100, reduction: str = "mean",
                                    check_labels: bool = True, count=None, device=None, out=None):
    """Return ``(loss, grad)``: the loss as in :func:`softmax_cross_entropy`, and its gradient with respect to the
    logits for ``dloss = 1``, ``(p - onehot(labels)) / n_valid`` for "mean" (no division for "sum" and "none").

    One pass over the logits instead of two: on a GPU the fused kernel reads the logits once and writes the
    gradient once, where forward-then-backward also writes and reads back the probabilities (half the traffic).
    ``check_labels=False`` skips reading back the kernel's label-range flag, a host sync per call on a GPU, for
    callers that checked their labels once up front (``gpunet.training.fit`` does); a bad label then gives a NaN
    loss for its row rather than an error. On the CPU labels are always checked (it costs no sync there).

    ``count`` (reduction "mean" only): divide by this many rows instead of this batch's counted rows; a
    data-parallel rank passes the count of the whole global batch (``gpunet.distributed``), so that the ranks'
    gradients sum to the global batch's. A positive finite real number (``TypeError`` for a bool or a string,
    ``ValueError`` for 0, a negative number, NaN or inf).

    ``out``: an array of the logits' shape and dtype, apart from them, that takes the gradient, as ``out`` of
    :func:`softmax_cross_entropy` (with ``check_labels=False`` on a GPU a bad label's row is written, NaN).
    """
    dev, logits, labels = _prepare(logits, labels, "logits", reduction, device, ignore_index, out)
    if count is not None:
        if reduction != "mean":
            raise ValueError(f"count divides a mean: it needs reduction='mean', not {reduction!r}")
        count = require_divisor(count, "count")
        return _reduced_from_rows(dev.xp, functools.partial(dev.run, SOFTMAX_CROSS_ENTROPY), logits, labels,
                                  ignore_index, True, check_labels, count, out=out)
    if reduction != "none":
        return dev.run(SOFTMAX_CROSS_ENTROPY_REDUCED, logits, labels, ignore_index, reduction == "mean",
                       check=check_labels, out=out)
    loss_rows, grad = dev.run(SOFTMAX_CROSS_ENTROPY, logits, labels, ignore_index,
                              grad_scale=dev.xp.ones(1, dtype=wide_dtype(logits.dtype)), check=check_labels, out=out)
    return rounded(loss_rows, logits.dtype), grad


def scale_grad(grad, dloss, reduction: str = "mean"):
    """``grad * dloss`` for the gradient of :func:`softmax_cross_entropy_with_grad` (computed for ``dloss = 1``):
    a scalar ``dloss`` for "mean" and "sum", a scalar or one value per row for "none"."""
    if isinstance(dloss, (int, float)) and dloss == 1:
        return grad
    dloss = _checked_dloss(device_of(grad).xp, dloss, reduction, grad.shape[0], grad.dtype)
    return grad * (dloss[:, None] if dloss.ndim else dloss)


def softmax_cross_entropy_backward(probs, labels, dloss=1.0, ignore_index: int = -100, reduction: str = "mean",
                                   device=None):
    """``(probs - onehot(labels)) * dloss / n_valid`` (mean), ``* dloss`` (sum), ``* dloss[:, None]`` (none).

    Rows whose label is ``ignore_index`` get a zero gradient.
    """
    dev, probs, labels = _prepare(probs, labels, "probs", reduction, device, ignore_index)
    scale = _row_scale(dev.xp, dloss, labels != ignore_index, reduction, wide_dtype(probs.dtype))
    return dev.run(SOFTMAX_CROSS_ENTROPY_BACKWARD, probs, labels, scale, ignore_index)


def _checked_dloss(xp, dloss, reduction, n_rows, dtype):
    """``dloss`` as an array: a scalar, or for reduction "none" also one value per row."""
    dloss = xp.asarray(dloss, dtype=dtype)
    if dloss.ndim == 0 or (reduction == "none" and tuple(dloss.shape) == (n_rows,)):
        return dloss
    want = f"a scalar or shape ({n_rows},)" if reduction == "none" else "a scalar"
    raise ValueError(f"dloss for reduction={reduction!r} must be {want}, got shape {tuple(dloss.shape)}")


def _row_scale(xp, dloss, valid, reduction, dtype):
    """The factor each row's ``p - onehot`` is multiplied by; zero for ignored rows."""
    valid_f = valid.astype(dtype)
    dloss = _checked_dloss(xp, dloss, reduction, valid.shape[0], dtype)
    if reduction == "mean":
        n_valid = xp.maximum(valid_f.sum(), 1)
        return valid_f * (dloss / n_valid)
    return valid_f * dloss


def _reduce(xp, loss_rows, labels, ignore_index, reduction, dtype):
    """The row losses (in the accumulation type) reduced: summed in float64, rounded once to ``dtype``."""
    if reduction == "none":
        return rounded(loss_rows, dtype)
    total = loss_rows.sum(dtype=xp.float64)
    if reduction == "sum":
        return rounded(total, dtype)
    with quiet(xp):
        return rounded(total / (labels != ignore_index).sum(), dtype)
