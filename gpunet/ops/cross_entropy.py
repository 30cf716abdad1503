"""Softmax cross-entropy, fused: the loss from log-softmax, the gradient straight from the probabilities.

For one row with logits ``x``, probabilities ``p = softmax(x)`` and true class ``t``, the loss is
``L = -log p_t = logsumexp(x) - x_t``. Its gradient needs no Jacobian at all:
``dL/dx_j = p_j - [j == t]``, i.e. ``p - onehot(t)``. Averaged over the ``N`` rows that count (rows whose label
is ``ignore_index`` contribute nothing), the batch gradient is ``(p - y) / N``. Going through log-softmax keeps
the loss finite for logits like 1e4, where ``log(softmax(x))`` would give ``log(0) = -inf``.

PyTorch's options generalise the target: with class weights ``w``, label smoothing ``eps`` over ``C`` classes
and a label ``t``, the row's target distribution is ``q_c = (1 - eps) w_t [c == t] + (eps / C) w_c``; with
probability targets ``T``, ``q_c = w_c ((1 - eps) T_c + eps / C)``. The loss is ``sum_c q_c (-log p_c)`` and the
gradient ``sum(q) p - q``; a mean divides by the counted rows' weight sum (labels) or the number of rows
(targets). ``kernels/cross_entropy.cu`` writes the formula out.
"""
from __future__ import annotations

import functools

from ..devices import device_of
from ..kinds import CrossEntropyBackwardOp, CrossEntropyOp, CrossEntropyReducedOp
from .checks import require_divisor
from .cross_entropy_targets import delivered, prepare, rows_out
from ..numerics import quiet, wide_dtype
from .rows import row_max, row_sum

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_with_grad", "softmax_cross_entropy_backward",
           "scale_grad", "softmax_cross_entropy_divisor"]


# ---- the NumPy forms, over a block of rows (float32 or wider) --------------------------------------------------
def _cross_entropy_rows(xp, x, labels, targets, row_scale, loss, out, ignore_index, weight=None, smoothing=0.0):
    """shifted = x - m; the loss ``a (log s - shifted[label]) + k (S + U log s)`` (see ``_target_terms``);
    p = exp(shifted) / s into ``out``, then, given ``row_scale``, the gradient in its place (0 for ignored
    rows)."""
    xp.subtract(x, row_max(xp, x), out=out)
    a, k, u, valid = _target_terms(xp, labels, targets, weight, smoothing, x.shape[1], ignore_index, out.dtype)
    mixed = k is not None
    if mixed:  # S = sum_c u_c (m - x_c) >= 0 term by term (no cancellation), U = sum_c u_c
        S = -(u * out).sum(axis=1)
        U = xp.broadcast_to(u, out.shape).sum(axis=1)
    if labels is not None:
        rows = xp.arange(len(labels))
        picked = out[rows, xp.where(valid, labels, 0)]
    xp.exp(out, out=out)
    s = row_sum(xp, out)
    out /= s
    log_s = xp.log(s[:, 0])
    if labels is not None:
        xp.multiply(a, log_s - picked, out=loss)
    else:
        loss[...] = 0
    if mixed:
        loss += k * (S + U * log_s)
    if valid is not None:
        loss[~valid] = 0
    if row_scale is not None:
        _gradient_rows(xp, out, labels, targets, row_scale, out, ignore_index, weight, smoothing,
                       U if mixed else None)


def _target_terms(xp, labels, targets, weight, smoothing, n_classes, ignore_index, dtype):
    """Per row: ``a`` (the label's factor, (rows,)), ``k`` (the factor of the smoothing or target part, or None
    where there is none), ``u`` (that part, (1, C) or (rows, C)) and the counted rows (None for targets)."""
    w = None if weight is None else weight.astype(dtype, copy=False)
    if targets is not None:
        part = (1 - smoothing) * targets.astype(dtype, copy=False) + smoothing / n_classes
        return None, 1.0, part if w is None else part * w, None
    valid = labels != ignore_index
    a = xp.full(len(labels), 1 - smoothing, dtype=dtype)
    if w is not None:
        a *= w[xp.where(valid, labels, 0)]
    if smoothing == 0:
        return a, None, None, valid
    u = xp.ones((1, n_classes), dtype=dtype) if w is None else w[None, :]
    return a, smoothing / n_classes, u, valid


def _gradient_rows(xp, probs, labels, targets, scale, grad, ignore_index, weight=None, smoothing=0.0, U=None):
    """grad = (a (p - onehot) + k (U p - u)) * scale, 0 for ignored rows: the label's p - 1 first (exact near
    p = 1, and -inf, not inf - inf = NaN, for an infinite scale), as every kernel computes it. ``U``: the rows'
    sums of u (computed here where not given)."""
    a, k, u, valid = _target_terms(xp, labels, targets, weight, smoothing, probs.shape[1], ignore_index,
                                   probs.dtype)
    mixed_part = None
    if k is not None:
        if U is None:
            U = xp.broadcast_to(u, probs.shape).sum(axis=1)
        mixed_part = (U[:, None] * probs - u) * k
    if labels is not None:
        if grad is not probs:
            grad[...] = probs
        grad[xp.arange(len(labels)), xp.where(valid, labels, 0)] -= 1
        grad *= a[:, None]
        if mixed_part is not None:
            grad += mixed_part
    else:
        grad[...] = mixed_part
    grad *= scale[:, None]
    if valid is not None:
        grad[~valid] = 0


def _reduced_from_rows(xp, cross_entropy_rows, call, mean, check, count=None, out=None):
    """The "mean" or "sum" loss and its gradient from the per-row form: the gradient is scaled by ``1 / divisor``
    as it is written (``count`` where given, else ``call.divisor()``: the counted rows, or their weight sum).
    ``1 / divisor`` is inf when no row counts, harmless since ignored rows never use it (their gradient is 0 by
    rule), and it makes the mean loss ``0 / 0 = NaN``, as PyTorch's. The row losses (in the accumulation type)
    are summed in float64 and the result rounded once to the logits' dtype."""
    divisor = call.divisor() if count is None else xp.asarray(count, dtype=xp.float64)
    return _reduced_with(xp, cross_entropy_rows, call.scores, call.labels, call.ignore_index, call.options,
                         divisor, mean, check, out)


def _reduced_with(xp, cross_entropy_rows, scores, labels, ignore_index, options, divisor, mean, check, out):
    with quiet(xp):
        scale = xp.reciprocal(divisor) if mean else xp.ones((), dtype=xp.float64)
        grad_scale = scale.astype(wide_dtype(scores.dtype)).reshape(1)
    loss_rows, grad = cross_entropy_rows(scores, labels, ignore_index, grad_scale=grad_scale, check=check, out=out,
                                         **options)
    total = loss_rows.sum(dtype=xp.float64)
    with quiet(xp):
        return rounded(total / divisor if mean else total, scores.dtype), grad


def rounded(value, dtype):
    """A float64 result (a NumPy scalar or a device array) rounded once to ``dtype``: past its range it is inf,
    without a warning (the reduction rule of docs/semantics.md)."""
    if value.dtype == dtype:  # float32 and float64 rows: nothing to round (and no errstate: a microsecond)
        return value
    with quiet():
        return value.astype(dtype)


# The three forms every device runs (``gpunet.kinds``): per-row losses and probabilities (or the gradient); the
# reduced loss and its gradient in one call, where a device has it fused (the CPU's compiled kernel: elsewhere
# :func:`_reduced_from_rows` composes it from the per-row form); and the backward from the probabilities.
SOFTMAX_CROSS_ENTROPY = CrossEntropyOp("softmax_cross_entropy", "cross_entropy", _cross_entropy_rows, compiled=True)
SOFTMAX_CROSS_ENTROPY_REDUCED = CrossEntropyReducedOp("softmax_cross_entropy_reduced", "cross_entropy", None,
                                                      compiled=True)
SOFTMAX_CROSS_ENTROPY_BACKWARD = CrossEntropyBackwardOp("softmax_cross_entropy_backward", "cross_entropy",
                                                        _gradient_rows)


def softmax_cross_entropy(logits, labels, ignore_index: int = -100, reduction: str = "mean", device=None,
                          out=None, *, weight=None, label_smoothing: float = 0.0, axis=None):
    """Return ``(loss, probs)`` for ``logits`` and ``labels`` as PyTorch's ``F.cross_entropy`` takes them.

    Shapes: (N, C) logits with (N,) integer labels; an unbatched (C,) row with a 0-d label; (N, C, d1, ...) with
    (N, d1, ...) labels. The class axis is 1 (0 for a 1-D row); ``axis`` chooses another. ``labels`` may instead
    be probability targets, a floating array of the logits' shape (``ignore_index`` does not apply to them).
    ``weight``: a (C,) array of class weights. ``label_smoothing``: in [0, 1], spreading that much of each
    target over the C classes, as PyTorch does.

    ``reduction``: "mean" (over the rows whose label is not ``ignore_index``, weighted by their class's weight:
    NaN if none counts, as in PyTorch; over all rows for probability targets), "sum", or "none" (the labels'
    shape, 0 for ignored rows). The loss is a device array. ``out``: an array of the logits' shape and dtype,
    apart from them, that takes the probabilities (written in place for float32/64 logits whose class axis is
    last; otherwise through a temporary); a bad label leaves it as it was.
    """
    call = prepare(logits, labels, "logits", reduction, device, ignore_index, out, weight, label_smoothing, axis)
    loss_rows, probs = call.dev.run(SOFTMAX_CROSS_ENTROPY, call.scores, call.labels, call.ignore_index,
                                    out=rows_out(call, out), **call.options)
    return _reduce(call, loss_rows, reduction), delivered(call, probs, out)


def softmax_cross_entropy_with_grad(logits, labels, ignore_index: int = -100, reduction: str = "mean",
                                    check_labels: bool = True, count=None, device=None, out=None, *, weight=None,
                                    label_smoothing: float = 0.0, axis=None):
    """Return ``(loss, grad)``: the loss as in :func:`softmax_cross_entropy` (the same shapes and options), and
    its gradient with respect to the logits for ``dloss = 1``: ``(p - onehot(labels)) / n_valid`` for "mean"
    without options (no division for "sum" and "none").

    One pass over the logits instead of two: on a GPU the fused kernel reads the logits once and writes the
    gradient once, where forward-then-backward also writes and reads back the probabilities (half the traffic).
    ``check_labels=False`` skips reading back the kernel's label-range flag, a host sync per call on a GPU, for
    callers that checked their labels once up front (``gpunet.training.fit`` does); a bad label then gives a NaN
    loss for its row rather than an error. On the CPU labels are always checked (it costs no sync there).

    ``count`` (reduction "mean" only): divide by this instead of this batch's divisor (its counted rows, or with
    ``weight`` their weight sum; its rows for probability targets); a data-parallel rank passes the divisor of
    the whole global batch (``gpunet.distributed``), so that the ranks' gradients sum to the global batch's. A
    positive finite real number (``TypeError`` for a bool or a string, ``ValueError`` for 0, a negative number,
    NaN or inf).

    ``out``: an array of the logits' shape and dtype, apart from them, that takes the gradient, as ``out`` of
    :func:`softmax_cross_entropy` (with ``check_labels=False`` on a GPU a bad label's row is written, NaN).
    """
    call = prepare(logits, labels, "logits", reduction, device, ignore_index, out, weight, label_smoothing, axis)
    dev, place = call.dev, rows_out(call, out)
    if count is not None:
        if reduction != "mean":
            raise ValueError(f"count divides a mean: it needs reduction='mean', not {reduction!r}")
        count = require_divisor(count, "count")
    if count is not None or (reduction != "none" and (call.targets is not None or call.weight is not None
                                                      or call.smoothing)):
        loss, grad = _reduced_from_rows(dev.xp, functools.partial(dev.run, SOFTMAX_CROSS_ENTROPY), call,
                                        reduction == "mean", check_labels, count, out=place)
    elif reduction != "none":
        fused = dev.run(SOFTMAX_CROSS_ENTROPY_REDUCED, call.scores, call.labels, call.ignore_index,
                        reduction == "mean", check=check_labels, out=place)
        loss, grad = fused if fused is not None else _reduced_from_rows(
            dev.xp, functools.partial(dev.run, SOFTMAX_CROSS_ENTROPY), call, reduction == "mean", check_labels,
            out=place)
    else:
        loss_rows, grad = dev.run(SOFTMAX_CROSS_ENTROPY, call.scores, call.labels, call.ignore_index,
                                  grad_scale=dev.xp.ones(1, dtype=wide_dtype(call.dtype)), check=check_labels,
                                  out=place, **call.options)
        loss = call.loss_shape(rounded(loss_rows, call.dtype))
    return loss, delivered(call, grad, out)


def softmax_cross_entropy_divisor(labels, ignore_index: int = -100, *, weight=None, axis=None, device=None):
    """What a "mean" over a batch with these ``labels`` divides by, as a 0-d float64 array on the labels' device
    (never read back, so a GPU step stays free of host syncs): the rows whose label is not ``ignore_index``, or
    with ``weight`` their classes' weight sum; for probability targets (floating, with the class axis ``axis``, 1
    or 0 for one row) the number of rows. Data parallelism computes it over the global batch and passes it to
    each rank's :func:`softmax_cross_entropy_with_grad` as ``count``, so that N ranks give one process's
    gradient. A label out of range is the loss's to report; here it only must not index outside ``weight``."""
    dev = device_of(labels, device)
    labels = dev.asarray(labels)
    xp = dev.xp
    if labels.dtype.kind == "f":
        axis = (1 if labels.ndim >= 2 else 0) if axis is None else axis
        return xp.asarray(labels.size // max(labels.shape[axis], 1), dtype=xp.float64)
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    if weight is None:
        return xp.asarray(valid.sum(dtype=xp.float64))  # NumPy's sum is a scalar: a 0-d array, as CuPy's
    weight = dev.asarray(weight).astype(xp.float64)
    picked = xp.clip(xp.where(valid, flat, 0), 0, len(weight) - 1)
    return xp.asarray((weight[picked] * valid).sum())


def scale_grad(grad, dloss, reduction: str = "mean"):
    """``grad * dloss`` for the gradient of :func:`softmax_cross_entropy_with_grad` (computed for ``dloss = 1``):
    a scalar ``dloss`` for "mean" and "sum", a scalar or one value per row for "none" (for K-dim logits, of the
    labels' shape: it multiplies along every axis but the class axis 1)."""
    if isinstance(dloss, (int, float)) and dloss == 1:
        return grad
    xp = device_of(grad).xp
    if reduction != "none":
        return grad * _checked_dloss(xp, dloss, reduction, (), grad.dtype)
    batch = (grad.shape[0],) + tuple(grad.shape[2:]) if grad.ndim >= 2 else ()
    dloss = _checked_dloss(xp, dloss, reduction, batch, grad.dtype)
    return grad * (xp.expand_dims(dloss, 1) if dloss.ndim else dloss)


def softmax_cross_entropy_backward(probs, labels, dloss=1.0, ignore_index: int = -100, reduction: str = "mean",
                                   device=None, *, weight=None, label_smoothing: float = 0.0, axis=None):
    """The gradient of :func:`softmax_cross_entropy`'s loss from its probabilities (the same shapes and
    options): ``(probs - onehot(labels)) * dloss / n_valid`` (mean) without options, ``* dloss`` (sum),
    ``* dloss`` per row (none: of the labels' shape). Rows whose label is ``ignore_index`` get a zero gradient.
    """
    call = prepare(probs, labels, "probs", reduction, device, ignore_index, None, weight, label_smoothing, axis)
    xp = call.dev.xp
    dtype = wide_dtype(call.dtype)
    dloss = _checked_dloss(xp, dloss, reduction, call.batch_shape if reduction == "none" else (), dtype)
    scale = xp.broadcast_to(dloss.reshape(-1) if dloss.ndim else dloss, (call.scores.shape[0],)).astype(dtype)
    if reduction == "mean":
        divisor = call.divisor()
        scale = scale / xp.where(divisor == 0, 1, divisor).astype(dtype)
    grad = call.dev.run(SOFTMAX_CROSS_ENTROPY_BACKWARD, call.scores, call.labels, scale, call.ignore_index,
                        row_u=call.row_u(), **call.options)
    return call.in_layout(grad)


def _checked_dloss(xp, dloss, reduction, batch_shape, dtype):
    """``dloss`` as an array: a scalar, or for reduction "none" also one value per row (the labels' shape)."""
    dloss = xp.asarray(dloss, dtype=dtype)
    if dloss.ndim == 0 or (reduction == "none" and tuple(dloss.shape) == tuple(batch_shape)):
        return dloss
    want = f"a scalar or shape {tuple(batch_shape)}" if reduction == "none" else "a scalar"
    raise ValueError(f"dloss for reduction={reduction!r} must be {want}, got shape {tuple(dloss.shape)}")


def _reduce(call, loss_rows, reduction):
    """The row losses (in the accumulation type) reduced: summed in float64, rounded once to the logits'
    dtype."""
    if reduction == "none":
        return call.loss_shape(rounded(loss_rows, call.dtype))
    total = loss_rows.sum(dtype=call.dev.xp.float64)
    if reduction == "sum":
        return rounded(total, call.dtype)
    with quiet(call.dev.xp):
        return rounded(total / call.divisor(), call.dtype)
