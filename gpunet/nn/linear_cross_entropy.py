"""The vocabulary layer and its softmax cross-entropy as one module: ``Linear`` then ``SoftmaxCrossEntropy``
without the (N, V) logits between them (``ops.linear_cross_entropy``: row blocks).

Training needs only the loss and the gradients, which the op computes block by block; inference wants the logits
or the best classes, which ``logits`` (materialised: for small batches) and ``top_k`` (by row blocks) give.
"""
from __future__ import annotations

import numpy

from .. import ops
from .init import init_weight
from .module import Module


class LinearCrossEntropy(Module):
    """``weight`` (in_features, num_classes) and ``bias`` (num_classes,) exactly as ``nn.Linear`` holds and
    initialises them (a ``Linear``'s state dict loads here), the loss options of ``nn.SoftmaxCrossEntropy``, and
    ``label_smoothing`` and ``block_rows`` of ``ops.linear_cross_entropy``."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True, init: str = "he", rng=0,
                 dtype="float32", ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 check_labels: bool = True, block_rows: int | None = None, device=None):
        super().__init__(device)
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(f"LinearCrossEntropy needs positive sizes, got in_features={in_features}, "
                             f"num_classes={num_classes}")
        self.in_features, self.num_classes = in_features, num_classes
        self.weight = self.add_parameter("weight", init_weight(init, in_features, num_classes, rng, dtype))
        self.bias = None
        if bias:
            self.bias = self.add_parameter("bias", numpy.zeros(num_classes, dtype=dtype))
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing, self.check_labels, self.block_rows = label_smoothing, check_labels, block_rows
        self._saved = None  # (h, labels, the op's gradients for dloss = 1) from a training forward

    def _run(self, h, labels, **options):
        return ops.linear_cross_entropy(
            h, self.weight.data.T, labels, None if self.bias is None else self.bias.data,
            ignore_index=self.ignore_index, reduction=self.reduction, label_smoothing=self.label_smoothing,
            check_labels=self.check_labels, block_rows=self.block_rows, device=self.device, **options)

    def _input(self, h):
        h = self.device.asarray(h)
        if h.ndim != 2 or h.shape[1] != self.in_features:
            raise ValueError(f"LinearCrossEntropy({self.in_features}, {self.num_classes}) expects input of shape "
                             f"(N, {self.in_features}), got {tuple(h.shape)}")
        return h

    def forward(self, h, labels):
        """The loss of ``h W + b`` against ``labels``. In training mode the gradients come out of the same pass
        (as ``nn.SoftmaxCrossEntropy``'s); in eval mode the loss alone, one product instead of three."""
        h = self._input(h)
        labels = self.device.asarray(labels)
        result = self._run(h, labels, compute_grads=self.training)
        self._saved = (h, labels, result) if self.training else None
        return result.loss

    def backward(self, dloss=1.0):
        """Write ``dloss`` times the loss's gradient into ``weight.grad`` and ``bias.grad`` (overwriting, as every
        module does) and return the gradient with respect to ``h``. A ``dloss`` of one value per row
        (reduction "none") runs the blocks again with it: the gradient of ``W`` is a sum over rows, which a
        per-row factor does not scale afterwards."""
        if self._saved is None:
            raise RuntimeError("LinearCrossEntropy.backward called before a forward in training mode")
        h, labels, result = self._saved
        scale = None
        if getattr(dloss, "ndim", 0):
            result = self._run(h, labels, dloss=dloss)  # the op checks its shape against the reduction
        elif not (isinstance(dloss, (int, float)) and dloss == 1):
            scale = self.device.xp.asarray(dloss)
        grads = [(result.grad_weight.T, self.weight.grad)]
        if self.bias is not None:
            grads.append((result.grad_bias, self.bias.grad))
        for grad, into in grads:
            if scale is None:
                into[...] = grad
            else:
                self.device.xp.multiply(grad, scale, out=into)
        return result.grad_h if scale is None else result.grad_h * scale.astype(result.grad_h.dtype)

    def logits(self, h):
        """``h W + b``, all (N, V) of them (``ops.linear``): for a batch small enough to hold them."""
        return ops.linear(self._input(h), self.weight.data, None if self.bias is None else self.bias.data,
                          device=self.device)

    def top_k(self, h, k: int = 1):
        """``(values, indices)``, each (N, k): the ``k`` largest logits of each row and their classes, largest
        first, computed by row blocks (``O(r x V)`` memory, as the loss). Ties come in no particular order; a
        NaN logit ranks below every number."""
        h = self._input(h)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_classes:
            raise ValueError(f"k must be an integer in [1, {self.num_classes}], got {k!r}")
        xp, n_rows = self.device.xp, h.shape[0]
        rows = self.block_rows or ops.block_rows_for(xp is numpy, n_rows, self.num_classes,
                                                     max(4, self.weight.data.dtype.itemsize))
        values = xp.empty((n_rows, k), dtype=xp.result_type(h, self.weight.data))
        indices = xp.empty((n_rows, k), dtype=xp.int64)
        for start in range(0, n_rows, rows):
            z = self.logits(h[start:start + rows])
            negated = xp.where(xp.isnan(z), xp.inf, -z)  # ascending order of -z, NaN last
            best = xp.argpartition(negated, k - 1, axis=1)[:, :k]
            order = xp.argsort(xp.take_along_axis(negated, best, axis=1), axis=1)
            best = xp.take_along_axis(best, order, axis=1)
            indices[start:start + rows] = best
            values[start:start + rows] = xp.take_along_axis(z, best, axis=1)
        return values, indices

    def extra_repr(self) -> str:
        smoothing = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return (f"{self.in_features}, {self.num_classes}, bias={self.bias is not None}, "
                f"reduction={self.reduction!r}{smoothing}")
