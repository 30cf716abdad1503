"""Softmax cross-entropy as a layer: forward gives the loss, backward the fused gradient ``(p - y) / N``.

The forward computes the gradient too, in the same pass (``ops.softmax_cross_entropy_with_grad``): it needs
nothing but the probabilities, which that pass has in hand. Backward only scales it by ``dloss``.
"""
from __future__ import annotations

from .. import ops
from ..ops.checks import require_smoothing
from .module import Module


class SoftmaxCrossEntropy(Module):
    def __init__(self, ignore_index: int = -100, reduction: str = "mean", check_labels: bool = True, device=None,
                 *, weight=None, label_smoothing: float = 0.0, axis=None):
        """``check_labels=False``: see ``ops.softmax_cross_entropy_with_grad`` (no host sync per step on a GPU;
        for labels checked once up front). ``weight`` (C class weights), ``label_smoothing`` and ``axis`` (the
        class axis: 1, or 0 for an unbatched row) as PyTorch's ``CrossEntropyLoss`` takes them; ``forward`` also
        takes probability targets of the logits' shape."""
        super().__init__(device)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.check_labels = check_labels
        self.weight = weight
        self.label_smoothing = require_smoothing(label_smoothing)
        self.axis = axis
        self._grad = None

    def forward(self, logits, labels, count=None):
        """The loss; ``count``: the mean's divisor where it is not this batch's (``ops.softmax_cross_entropy_
        with_grad``: a data-parallel rank passes the global batch's)."""
        loss, self._grad = ops.softmax_cross_entropy_with_grad(
            logits, labels, self.ignore_index, self.reduction, self.check_labels, count=count, device=self.device,
            weight=self.weight, label_smoothing=self.label_smoothing, axis=self.axis)
        return loss

    def divisor(self, labels) -> float:
        """What this loss's mean divides a batch with these labels by (its counted rows, their weight sum, or
        for probability targets its rows): a data-parallel rank passes the global batch's as ``count``."""
        return ops.softmax_cross_entropy_divisor(labels, self.ignore_index, weight=self.weight, axis=self.axis,
                                                 device=self.device)

    def backward(self, dloss=1.0):
        if self._grad is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        return ops.scale_grad(self._grad, dloss, self.reduction)
