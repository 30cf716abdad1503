"""A vocabulary layer and its softmax cross-entropy in one op, without the N x V logits: row blocks, as
Liger-Kernel's fused linear cross-entropy computes them.

For hidden states ``h`` (N, d), a weight ``W`` (V, d) as PyTorch's and Liger's ``nn.Linear`` hold it (the transpose
of ``ops.linear``'s), a bias ``b`` (V,) and labels ``t``, the loss is the cross-entropy of the logits
``z = h W^T + b``. Its gradient is ``G = dL/dz = (p - onehot(t)) * s`` (``s = 1 / n_valid`` for the mean), and
the chain rule through the product gives ``dL/dh = G W``, ``dL/dW = G^T h``, ``dL/db = sum over rows of G``.
Row ``n`` of ``G`` needs only row ``n`` of ``z``, so a block of ``r`` rows is computed start to finish: its
``r x V`` logits (one product), the loss and ``G`` in one fused pass (``ops.softmax_cross_entropy_with_grad``:
gpunet's CUDA kernel on a GPU and in ``sim``, the compiled CPU kernel on ``cpu``), then ``dL/dh`` of its rows and
its share of ``dL/dW`` (two more products) and of ``dL/db``. Three products in all, as many as the materialised
computation, and the extra memory is one buffer of ``(r + s) x V``, where the block's gradient replaces its logits
``s`` rows at a time (:func:`sub_block_rows`), instead of ``N x V`` twice.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy

from ..errors import check_label_range
from ..numerics import quiet, wide_dtype
from .checks import (labels_as_int64, native, on_device, promoted, require_floating, require_int64,
                     require_labels, require_ndim, require_reduction, require_smoothing)
from .cross_entropy import softmax_cross_entropy_divisor, softmax_cross_entropy_with_grad
from .linear import BIAS_ADD

__all__ = ["linear_cross_entropy", "LinearCrossEntropyResult", "block_rows_for", "sub_block_rows"]

# A block's logits (then its gradient, in their place), in bytes: on the host about the last-level cache of a
# current server CPU's core complex (32 MiB on AMD Zen 4, 30-60 MiB on Intel Xeons), so the fused pass and the
# next product read the block from cache where they can; on a GPU a small share of its memory, large enough for
# cuBLAS's full speed.
HOST_BLOCK_BYTES = 32 << 20
GPU_BLOCK_BYTES = 512 << 20
# The fewest rows a block has whatever the vocabulary: each block reads W twice and reads and writes dL/dW once, so
# r rows do about 6 r V d flops for 16 V d bytes (float32) moved; at r = 256 the products stay compute-bound.
MIN_BLOCK_ROWS = 256
# dL/dW is accumulated by vocabulary chunks: the chunk of G and its partial product, each about this many bytes,
# stay in a core's L2 cache.
HOST_CHUNK_BYTES = 1 << 20


class LinearCrossEntropyResult(NamedTuple):
    """The loss and the gradients of ``dloss * loss``; the gradients are None when not asked for, ``grad_bias``
    also when there is no bias."""
    loss: Any
    grad_h: Any
    grad_weight: Any
    grad_bias: Any


def block_rows_for(host: bool, n_rows: int, n_classes: int, itemsize: int) -> int:
    """The rule for ``r``, the rows of one block: as many as let the block's logits (``r V`` values of
    ``itemsize`` bytes, which its gradient then replaces) fill ``HOST_BLOCK_BYTES`` (``GPU_BLOCK_BYTES`` on a
    GPU), a multiple of 16, never fewer than ``MIN_BLOCK_ROWS`` (below that, reading W for each block costs more
    than its products) and never more than the batch."""
    budget = HOST_BLOCK_BYTES if host else GPU_BLOCK_BYTES
    rows = budget // (n_classes * itemsize) // 16 * 16
    return max(1, min(n_rows, max(MIN_BLOCK_ROWS, rows)))


def sub_block_rows(block_rows: int) -> int:
    """The rows ``s`` the fused cross-entropy takes at a time within a block: it writes their gradient into the
    ``s`` rows above them, whose logits it has already read (it needs an output apart from its input), so a block
    needs one buffer of ``r + s`` rows, not two of ``r``. An eighth of the block, at least 16 rows (the CPU kernel
    splits rows over threads; a GPU launch wants many rows)."""
    return min(block_rows, max(16, block_rows // 8))


def linear_cross_entropy(h, weight, labels, bias=None, *, ignore_index: int = -100, reduction: str = "mean",
                         label_smoothing: float = 0.0, count=None, dloss=1.0, check_labels: bool = True,
                         compute_grads: bool = True, block_rows: int | None = None,
                         device=None) -> LinearCrossEntropyResult:
    """Return ``(loss, grad_h, grad_weight, grad_bias)`` for the softmax cross-entropy of ``h @ weight.T + bias``
    without building those (N, V) logits: see the module's docstring.

    ``h`` (N, d), ``weight`` (V, d), ``bias`` (V,) or None, ``labels`` (N,) of any integer kind. ``ignore_index``,
    ``reduction``, ``count``, ``check_labels`` and the error for a bad label ("label 7 at row 3", the row in the
    whole batch) are those of :func:`softmax_cross_entropy_with_grad`, and so are NaN and inf: a row whose logits
    hold one has a NaN loss and gradient, which the products carry into ``grad_weight`` and ``grad_bias`` as the
    materialised computation's would. Mixed float dtypes are promoted to their common dtype; float16 is computed
    in float32 (its products, the loss and the accumulated gradients: a float32 copy of ``weight`` and of its
    gradient, the size of the parameters) and rounded once.

    ``label_smoothing`` (``eps`` in [0, 1]) is PyTorch's: the target puts ``1 - eps + eps/V`` on the label and
    ``eps/V`` elsewhere. Per counted row, with ``lse = logsumexp(z)``,
    ``L = (1 - eps)(lse - z_t) + eps * mean_j(lse - z_j) = (lse - z_t) + eps (z_t - mean(z))``: the unsmoothed
    loss plus a term that needs no softmax. Its gradient
    ``p - (1 - eps) onehot - eps/V = (p - onehot) + eps (onehot - 1/V)`` is the unsmoothed one plus a constant
    per row. So each block runs the fused op unchanged and adds ``eps (z_t - mean(z))`` to the loss and
    ``s eps (onehot - 1/V)`` to ``G`` (``s`` the row's scale; ignored rows get nothing), before the products.

    ``dloss`` (a scalar, or one value per row for "none"): the gradients are those of ``dloss * loss`` (the loss
    itself is unscaled). ``compute_grads=False``: the loss alone, one product instead of three (evaluation).
    ``block_rows``: ``r``, else :func:`block_rows_for`'s rule.
    """
    dev, h, weight, labels, bias = _prepare(h, weight, labels, bias, reduction, ignore_index, device)
    label_smoothing = require_smoothing(label_smoothing)
    if count is not None and reduction != "mean":
        raise ValueError(f"count divides a mean: it needs reduction='mean', not {reduction!r}")
    xp, dtype = dev.xp, h.dtype
    wide = wide_dtype(dtype)
    n_rows, n_classes = h.shape[0], weight.shape[0]
    if check_labels or dev.xp is numpy:  # up front, once: the row named is the batch's, not the block's
        check_label_range(xp, labels, n_classes, ignore_index)
    row_dloss = _checked_dloss(xp, dloss, reduction, n_rows, wide)
    if row_dloss.ndim == 0 and isinstance(dloss, (int, float)) and dloss == 1:
        row_dloss = None  # nothing to multiply by
    if block_rows is None:
        block_rows = block_rows_for(xp is numpy, n_rows, n_classes, wide.itemsize)
    elif isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    block_rows = min(block_rows, n_rows)

    w = _as_matrix(xp, weight.astype(wide, copy=False))
    b = None if bias is None else bias.astype(wide, copy=False)
    if reduction == "mean":
        count = softmax_cross_entropy_divisor(labels, ignore_index, device=dev) if count is None else count
    sub = sub_block_rows(block_rows)
    buffer = xp.empty((block_rows + sub, n_classes), dtype=wide)  # a block's logits, then its gradient
    grads = None
    if compute_grads:
        grads = _Gradients(dev, n_rows, block_rows, w, b is not None, dtype, wide)
    losses = xp.empty(n_rows, dtype=wide) if reduction == "none" else []
    for start in range(0, n_rows, block_rows):
        stop = min(n_rows, start + block_rows)
        h_block = xp.ascontiguousarray(h[start:stop], dtype=wide)  # as every BLAS reads it
        z = dev.matmul(h_block, w.T, out=buffer[sub:sub + stop - start])
        if b is not None:
            dev.run(BIAS_ADD, z, b)
        for first in range(0, stop - start, sub):  # G of these rows into the rows above them, already read
            last = min(stop - start, first + sub)
            part_labels = labels[start + first:start + last]
            loss, grad = softmax_cross_entropy_with_grad(z[first:last], part_labels, ignore_index, reduction,
                                                         check_labels=False, count=count, device=dev,
                                                         out=buffer[first:last])
            if label_smoothing:
                loss = _smooth(xp, z[first:last], part_labels, grad, loss, label_smoothing, ignore_index, count,
                               reduction)
            if reduction == "none":
                losses[start + first:start + last] = loss
            else:
                losses.append(loss)
        grad = buffer[:stop - start]
        if grads is not None:
            if row_dloss is not None:
                with quiet(xp):
                    grad *= row_dloss[start:stop, None] if row_dloss.ndim else row_dloss
            grads.add_block(start, stop, h_block, grad)
    with quiet(xp):  # a 0-d loss as the fused op gives it: a NumPy scalar on the host, a 0-d array on a GPU
        loss = losses.astype(dtype, copy=False) if reduction == "none" else _total(xp, losses).astype(dtype)[()]
    if grads is None:
        return LinearCrossEntropyResult(loss, None, None, None)
    return LinearCrossEntropyResult(loss, *grads.result())


def _prepare(h, weight, labels, bias, reduction, ignore_index, device):
    """Every array on the op's device, checked, and the floating ones promoted to one dtype."""
    dev, h = on_device(h, device, "h", nonempty=True)
    weight = native(dev.asarray(weight))
    require_floating(weight, "weight")
    require_ndim(h, 2, "h")
    require_ndim(weight, 2, "weight")
    if weight.shape[0] == 0 or weight.shape[1] != h.shape[1]:
        raise ValueError(f"weight must have shape (V, {h.shape[1]}) with V >= 1 for h of shape {tuple(h.shape)} "
                         f"(the vocabulary's rows, as torch.nn.Linear holds them), got {tuple(weight.shape)}")
    arrays = [h, weight]
    if bias is not None:
        bias = native(dev.asarray(bias))
        require_floating(bias, "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        arrays.append(bias)
    arrays = promoted(dev.xp, *arrays)
    require_reduction(reduction)
    labels = dev.asarray(labels)
    require_labels(labels, h.shape[0])
    require_int64(ignore_index, "ignore_index")
    labels = labels_as_int64(dev.xp, labels, weight.shape[0], ignore_index)
    return dev, arrays[0], arrays[1], labels, (arrays[2] if bias is not None else None)


def _as_matrix(xp, w):
    """``w`` as its BLAS takes it without a copy: C- or Fortran-contiguous (``nn.LinearCrossEntropy`` passes the
    transpose of its (d, V) weight, a Fortran-contiguous view)."""
    return w if w.flags.c_contiguous or w.flags.f_contiguous else xp.ascontiguousarray(w)


def _checked_dloss(xp, dloss, reduction, n_rows, dtype):
    """``dloss`` as an array: a scalar, or for reduction "none" also one value per row."""
    dloss = xp.asarray(dloss, dtype=dtype)
    if dloss.ndim == 0 or (reduction == "none" and tuple(dloss.shape) == (n_rows,)):
        return dloss
    want = f"a scalar or shape ({n_rows},)" if reduction == "none" else "a scalar"
    raise ValueError(f"dloss for reduction={reduction!r} must be {want}, got shape {tuple(dloss.shape)}")


def _smooth(xp, z, labels, grad, loss, eps, ignore_index, count, reduction):
    """Label smoothing added to one block's fused result (the derivation: ``linear_cross_entropy``): the loss
    gains ``eps (z_t - mean(z))`` per counted row, the gradient ``s eps (onehot - 1/V)``, ``s`` the row's scale
    (``1 / count`` for the mean, else 1). Returns the block's loss."""
    valid = labels != ignore_index
    rows, columns = xp.arange(len(labels)), xp.where(valid, labels, 0)
    with quiet(xp):
        scale = xp.reciprocal(xp.asarray(count, dtype=z.dtype)) if reduction == "mean" else z.dtype.type(1)
        row_scale = xp.where(valid, scale, 0).astype(z.dtype)  # where, not valid * scale: 0 * inf is NaN
        extra = xp.where(valid, eps * (z[rows, columns] - z.mean(axis=1)), 0).astype(z.dtype)
        grad -= (row_scale * (eps / z.shape[1]))[:, None]
        grad[rows, columns] += row_scale * eps
        if reduction == "none":
            return loss + extra
        total = extra.sum()
        return loss + (total * scale if reduction == "mean" else total)


def _total(xp, block_losses):
    """The blocks' reduced losses summed in float64 (no host sync on a GPU)."""
    total = xp.zeros((), dtype=xp.float64)
    for loss in block_losses:
        total = total + xp.asarray(loss, dtype=xp.float64)
    return total


class _Gradients:
    """``dL/dh`` row block by row block, and ``dL/dW``, ``dL/db`` accumulated over the blocks in the computation's
    dtype (float32 for float16), ``dL/dW`` in the weight's memory layout.

    ``dL/dW += G^T h_block`` goes by vocabulary chunks, so that its partial product is a chunk, not (V, d): each
    chunk of ``G``'s columns is first copied apart (a strided slice is a matrix no BLAS reads as such; oneMKL
    would hand it to NumPy's BLAS, and two BLASes in one process slow each other down several times over)."""

    def __init__(self, dev, n_rows, block_rows, w, with_bias, dtype, wide):
        xp = dev.xp
        self.dev, self.dtype = dev, dtype
        self.w = w
        self.grad_h = xp.empty((n_rows, w.shape[1]), dtype=dtype)
        self.grad_w = xp.zeros(w.shape, dtype=wide, order="C" if w.flags.c_contiguous else "F")
        self.grad_b = xp.zeros(w.shape[0], dtype=wide) if with_bias else None
        n_classes, width = w.shape
        chunk_bytes = HOST_CHUNK_BYTES if xp is numpy else GPU_BLOCK_BYTES // 8
        self.chunk = max(1, min(n_classes, chunk_bytes // (max(block_rows, width) * wide.itemsize)))
        self.grad_chunk = xp.empty(block_rows * self.chunk, dtype=wide)
        self.product = xp.empty(self.chunk * width, dtype=wide)

    def add_block(self, start, stop, h_block, grad):
        """``grad`` is dL/dz of rows ``start:stop``: dL/dh of those rows, and their share of dL/dW and dL/db."""
        dev = self.dev
        if self.grad_h.dtype == grad.dtype:
            dev.matmul(grad, self.w, out=self.grad_h[start:stop])
        else:
            self.grad_h[start:stop] = dev.matmul(grad, self.w)
        if self.grad_b is not None:
            self.grad_b += grad.sum(axis=0)
        (rows, n_classes), width = grad.shape, self.w.shape[1]
        for first in range(0, n_classes, self.chunk):
            last = min(n_classes, first + self.chunk)
            columns = self.grad_chunk[:rows * (last - first)].reshape(rows, last - first)
            columns[...] = grad[:, first:last]
            if self.grad_w.flags.c_contiguous:  # rows first:last of dL/dW = G[:, chunk]^T h_block
                self.grad_w[first:last] += dev.matmul(
                    columns.T, h_block, out=self.product[:(last - first) * width].reshape(last - first, width))
            else:  # dL/dW^T (d, V) is C-contiguous: its columns first:last = h_block^T G[:, chunk]
                self.grad_w[first:last] += dev.matmul(
                    h_block.T, columns, out=self.product[:width * (last - first)].reshape(width, last - first)).T

    def result(self):
        """(dL/dh, dL/dW, dL/db) in the inputs' dtype (float16 past its range becomes inf)."""
        with quiet(self.dev.xp):
            return tuple(None if g is None else g.astype(self.dtype, copy=False)
                         for g in (self.grad_h, self.grad_w, self.grad_b))
