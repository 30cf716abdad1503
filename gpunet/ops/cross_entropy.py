"""Softmax cross-entropy, fused: the loss from log-softmax, the gradient straight from the probabilities.

For one row with logits ``x``, probabilities ``p = softmax(x)`` and true class ``t``, the loss is
``L = -log p_t = logsumexp(x) - x_t``. Its gradient needs no Jacobian at all:
``dL/dx_j = p_j - [j == t]``, i.e. ``p - onehot(t)``. Averaged over the ``N`` rows that count (rows whose label
is ``ignore_index`` contribute nothing), the batch gradient is ``(p - y) / N``. Going through log-softmax keeps
the loss finite for logits like 1e4, where ``log(softmax(x))`` would give ``log(0) = -inf``.
"""
from __future__ import annotations

from ..backend import device_of
from .checks import (raise_label_out_of_range, require_floating, require_labels, require_ndim, require_nonempty,
                     require_reduction)
from .rows import row_max, row_sum
from .softmax import _quiet, quietly, widened


def softmax_cross_entropy(logits, labels, ignore_index: int = -100, reduction: str = "mean", device=None):
    """Return ``(loss, probs)`` for (N, C) ``logits`` and (N,) integer ``labels``.

    ``reduction``: "mean" over the rows whose label is not ``ignore_index`` (NaN if there are none, as in
    PyTorch), "sum", or "none" (an (N,) array with 0 for ignored rows). The loss is a device array.
    """
    # On a kernel device the fused kernel checks the label range itself and reports through an error word.
    dev, logits, labels = _prepare(logits, labels, "logits", ignore_index, reduction, device, check_range=False)
    xp = dev.xp
    n_rows = logits.shape[0]
    if dev.kernels is not None:
        loss_rows, probs = dev.kernels.softmax_cross_entropy(xp.ascontiguousarray(logits), labels, ignore_index)
    else:
        wide = xp.ascontiguousarray(widened(logits))
        probs = xp.empty_like(wide)
        loss_rows = xp.empty(n_rows, dtype=wide.dtype)
        dev.map_rows(quietly(xp, _forward_block(xp, ignore_index)), [wide, labels], [loss_rows, probs])
        loss_rows, probs = loss_rows.astype(logits.dtype, copy=False), probs.astype(logits.dtype, copy=False)
    return _reduce(xp, loss_rows, labels, ignore_index, reduction), probs


def softmax_cross_entropy_with_grad(logits, labels, ignore_index: int = -100, reduction: str = "mean",
                                    check_labels: bool = True, device=None):
    """Return ``(loss, grad)``: the loss as in :func:`softmax_cross_entropy`, and its gradient with respect to the
    logits for ``dloss = 1``, ``(p - onehot(labels)) / n_valid`` for "mean" (no division for "sum" and "none").

    One pass over the logits instead of two: on a GPU the fused kernel reads the logits once and writes the
    gradient once, where forward-then-backward also writes and reads back the probabilities (half the traffic).
    ``check_labels=False`` skips reading back the kernel's label-range flag, a host sync per call on a GPU, for
    callers that checked their labels once up front (``gpunet.training.fit`` does); a bad label then gives a NaN
    loss for its row rather than an error. On the CPU labels are always checked (it costs no sync there).
    """
    dev = device_of(logits, device)
    logits = dev.asarray(logits)
    reduced = (dev.compiled_block("cross_entropy_reduced", logits.dtype, ignore_index=int(ignore_index),
                                  mean=reduction == "mean")
               if dev.kernels is None and reduction in ("mean", "sum") else None)
    dev, logits, labels = _prepare(logits, labels, "logits", ignore_index, reduction, dev, check_range=False,
                                   range_checked_by_kernel=reduced is not None)
    xp = dev.xp
    if reduced is not None:
        return _reduced_on_cpu(xp, reduced, logits, labels, ignore_index)
    valid = labels != ignore_index
    wide_dtype = widened(logits).dtype
    # 1 / n_valid: inf when every row is ignored, harmless since ignored rows never use it (their gradient is
    # 0 by rule), and it makes the mean loss 0 * inf = NaN, as PyTorch's. Few device ops: a GPU step is host-bound.
    with _quiet(xp):
        scale = (xp.reciprocal(valid.sum(), dtype=wide_dtype) if reduction == "mean"
                 else xp.ones((), dtype=wide_dtype))
    if dev.kernels is not None:
        loss_rows, grad = dev.kernels.softmax_cross_entropy(xp.ascontiguousarray(logits), labels, ignore_index,
                                                            grad_scale=scale.reshape(1).astype(logits.dtype, copy=False),
                                                            check=check_labels)
    else:
        wide = xp.ascontiguousarray(widened(logits))
        grad = xp.empty_like(wide)
        loss_rows = xp.empty(labels.shape[0], dtype=wide.dtype)
        row_scale = xp.where(valid, scale, 0).astype(wide.dtype, copy=False)
        compiled = dev.compiled_block("cross_entropy", wide.dtype, ignore_index=int(ignore_index))
        if compiled is not None:
            labels = xp.ascontiguousarray(labels, dtype=xp.int64)
            compiled(wide, labels, row_scale, loss_rows, grad)
        else:
            forward, backward = _forward_block(xp, ignore_index), _backward_block(xp, ignore_index)

            def loss_and_grad(x, labels_block, row_scale_block, loss_block, grad_block):
                forward(x, labels_block, loss_block, grad_block)  # the probabilities, in the gradient's buffer
                backward(grad_block, labels_block, row_scale_block, grad_block)
            dev.map_rows(quietly(xp, loss_and_grad), [wide, labels, row_scale], [loss_rows, grad])
        loss_rows, grad = loss_rows.astype(logits.dtype, copy=False), grad.astype(logits.dtype, copy=False)
    if reduction == "mean":
        with _quiet(xp):
            return (loss_rows.sum() * scale).astype(loss_rows.dtype, copy=False), grad
    return _reduce(xp, loss_rows, labels, ignore_index, reduction), grad


def scale_grad(grad, dloss, reduction: str = "mean"):
    """``grad * dloss`` for the gradient of :func:`softmax_cross_entropy_with_grad` (computed for ``dloss = 1``):
    a scalar ``dloss`` for "mean" and "sum", a scalar or one value per row for "none"."""
    if isinstance(dloss, (int, float)) and dloss == 1:
        return grad
    xp = device_of(grad).xp
    dloss = xp.asarray(dloss, dtype=grad.dtype)
    per_row = reduction == "none" and dloss.ndim == 1
    if dloss.ndim != 0 and not (per_row and dloss.shape[0] == grad.shape[0]):
        want = f"a scalar or shape ({grad.shape[0]},)" if reduction == "none" else "a scalar"
        raise ValueError(f"dloss for reduction={reduction!r} must be {want}, got shape {tuple(dloss.shape)}")
    return grad * (dloss[:, None] if per_row else dloss)


def _prepare(scores, labels, name, ignore_index, reduction, device, check_range, range_checked_by_kernel=False):
    """Both arrays on the op's device, checked: (N, C) floating scores, (N,) integer labels in range (the range
    only where no kernel checks it: a GPU's kernels do, and the CPU's compiled reduced loss), a known
    reduction."""
    dev = device_of(scores, device)
    scores, labels = dev.asarray(scores), dev.asarray(labels)
    require_floating(scores, name)
    require_ndim(scores, 2, name)
    require_nonempty(scores, name)
    require_reduction(reduction)
    require_labels(dev.xp, labels, scores.shape[0], scores.shape[1], ignore_index,
                   check_range=check_range or (dev.kernels is None and not range_checked_by_kernel))
    return dev, scores, labels


def _reduced_on_cpu(xp, reduced, logits, labels, ignore_index):
    """The CPU's compiled "mean" or "sum": labels checked, loss and gradient, in one call (a small batch's loss
    otherwise costs a dozen NumPy calls, more than the arithmetic)."""
    grad = xp.empty(logits.shape, dtype=logits.dtype)
    bad_row, loss = reduced(xp.ascontiguousarray(logits), xp.ascontiguousarray(labels, dtype=xp.int64), grad)
    if bad_row >= 0:  # the label as given, not as converted (a uint64 past 2^63 would read negative)
        raise_label_out_of_range(bad_row, int(labels[bad_row]), logits.shape[1], ignore_index)
    return logits.dtype.type(loss), grad


def _forward_block(xp, ignore_index):
    """Per row block: shifted = x - m; loss = (m - x[label]) + log s = log s - shifted[label]; p = exp(shifted) / s."""
    def run(x, labels, loss, probs):
        xp.subtract(x, row_max(xp, x), out=probs)
        valid = labels != ignore_index
        picked = probs[xp.arange(len(labels)), xp.where(valid, labels, 0)]
        xp.exp(probs, out=probs)
        s = row_sum(xp, probs)
        probs /= s
        xp.subtract(xp.log(s[:, 0]), picked, out=loss)
        loss[~valid] = 0
    return run


def _backward_block(xp, ignore_index):
    """Per row block: grad = (p - onehot) * scale, 0 for ignored rows."""
    def run(probs, labels, scale, grad):
        xp.multiply(probs, scale[:, None], out=grad)
        valid = labels != ignore_index
        grad[xp.arange(len(labels)), xp.where(valid, labels, 0)] -= scale
        grad[~valid] = 0
    return run


def softmax_cross_entropy_backward(probs, labels, dloss=1.0, ignore_index: int = -100, reduction: str = "mean",
                                   device=None):
    """``(probs - onehot(labels)) * dloss / n_valid`` (mean), ``* dloss`` (sum), ``* dloss[:, None]`` (none).

    Rows whose label is ``ignore_index`` get a zero gradient.
    """
    dev, probs, labels = _prepare(probs, labels, "probs", ignore_index, reduction, device, check_range=False)
    xp = dev.xp
    valid = labels != ignore_index
    scale = _row_scale(xp, dloss, valid, reduction, widened(probs).dtype)
    if dev.kernels is not None:
        return dev.kernels.softmax_cross_entropy_backward(xp.ascontiguousarray(probs), labels, scale, ignore_index)
    wide = xp.ascontiguousarray(widened(probs))
    grad = xp.empty_like(wide)
    dev.map_rows(quietly(xp, _backward_block(xp, ignore_index)), [wide, labels, scale], [grad])
    return grad.astype(probs.dtype, copy=False)


def _row_scale(xp, dloss, valid, reduction, dtype):
    """The factor each row's ``p - onehot`` is multiplied by; zero for ignored rows."""
    valid_f = valid.astype(dtype)
    if reduction == "none":
        dloss = xp.asarray(dloss, dtype=dtype)
        if dloss.ndim not in (0, 1) or (dloss.ndim == 1 and dloss.shape[0] != valid.shape[0]):
            raise ValueError(f"dloss for reduction='none' must be a scalar or have shape ({valid.shape[0]},), "
                             f"got shape {tuple(dloss.shape)}")
        return valid_f * dloss
    dloss = xp.asarray(dloss, dtype=dtype)
    if dloss.ndim != 0:
        raise ValueError(f"dloss for reduction={reduction!r} must be a scalar, got shape {tuple(dloss.shape)}")
    if reduction == "mean":
        n_valid = xp.maximum(valid_f.sum(), 1)
        return valid_f * (dloss / n_valid)
    return valid_f * dloss


def _reduce(xp, loss_rows, labels, ignore_index, reduction):
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()
    if reduction == "sum":
        return total
    n_valid = (labels != ignore_index).sum()
    with _quiet(xp):
        return total / n_valid.astype(loss_rows.dtype)
