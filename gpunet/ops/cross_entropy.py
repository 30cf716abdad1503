"""Softmax cross-entropy, fused: the loss from log-softmax, the gradient straight from the probabilities.

For one row with logits ``x``, probabilities ``p = softmax(x)`` and true class ``t``, the loss is
``L = -log p_t = logsumexp(x) - x_t``. Its gradient needs no Jacobian at all:
``dL/dx_j = p_j - [j == t]``, i.e. ``p - onehot(t)``. Averaged over the ``N`` rows that count (rows whose label
is ``ignore_index`` contribute nothing), the batch gradient is ``(p - y) / N``. Going through log-softmax keeps
the loss finite for logits like 1e4, where ``log(softmax(x))`` would give ``log(0) = -inf``.
"""
from __future__ import annotations

from ..backend import device_of
from .checks import require_floating, require_labels, require_ndim, require_nonempty, require_reduction
from .softmax import _quiet, widened


def softmax_cross_entropy(logits, labels, ignore_index: int = -100, reduction: str = "mean", device=None):
    """Return ``(loss, probs)`` for (N, C) ``logits`` and (N,) integer ``labels``.

    ``reduction``: "mean" over the rows whose label is not ``ignore_index`` (NaN if there are none, as in
    PyTorch), "sum", or "none" (an (N,) array with 0 for ignored rows). The loss is a device array.
    """
    dev = device_of(logits, device)
    xp = dev.xp
    logits = dev.asarray(logits)
    labels = dev.asarray(labels)
    require_floating(logits, "logits")
    require_ndim(logits, 2, "logits")
    require_nonempty(logits, "logits")
    require_reduction(reduction)
    n_rows, n_classes = logits.shape
    # On a kernel device the fused kernel checks the range itself and reports through an error word.
    require_labels(xp, labels, n_rows, n_classes, ignore_index, check_range=dev.kernels is None)
    if dev.kernels is not None:
        loss_rows, probs = dev.kernels.softmax_cross_entropy(xp.ascontiguousarray(logits), labels, ignore_index)
    else:
        with _quiet(xp):
            wide = widened(logits)
            logp = wide - wide.max(axis=1, keepdims=True)
            logp -= xp.log(xp.exp(logp).sum(axis=1, keepdims=True))
        valid = labels != ignore_index
        safe = xp.where(valid, labels, 0)
        picked = logp[xp.arange(n_rows), safe]
        loss_rows = xp.where(valid, -picked, 0).astype(logits.dtype, copy=False)
        probs = xp.exp(logp, out=logp).astype(logits.dtype, copy=False)
    return _reduce(xp, loss_rows, labels, ignore_index, reduction), probs


def softmax_cross_entropy_backward(probs, labels, dloss=1.0, ignore_index: int = -100, reduction: str = "mean",
                                   device=None):
    """``(probs - onehot(labels)) * dloss / n_valid`` (mean), ``* dloss`` (sum), ``* dloss[:, None]`` (none).

    Rows whose label is ``ignore_index`` get a zero gradient.
    """
    dev = device_of(probs, device)
    xp = dev.xp
    probs = dev.asarray(probs)
    labels = dev.asarray(labels)
    require_floating(probs, "probs")
    require_ndim(probs, 2, "probs")
    require_nonempty(probs, "probs")
    require_reduction(reduction)
    n_rows, n_classes = probs.shape
    require_labels(xp, labels, n_rows, n_classes, ignore_index, check_range=dev.kernels is None)
    valid = labels != ignore_index
    scale = _row_scale(xp, dloss, valid, reduction, widened(probs).dtype)
    if dev.kernels is not None:
        return dev.kernels.softmax_cross_entropy_backward(xp.ascontiguousarray(probs), labels, scale, ignore_index)
    grad = widened(probs) * scale[:, None]
    rows = xp.arange(n_rows)
    safe = xp.where(valid, labels, 0)
    grad[rows, safe] -= scale
    grad[~valid] = 0
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
