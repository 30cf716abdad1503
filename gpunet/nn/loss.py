"""Softmax cross-entropy as a layer: forward gives the loss, backward the fused gradient ``(p - y) / N``.

The forward computes the gradient too, in the same pass (``ops.softmax_cross_entropy_with_grad``): it needs
nothing but the probabilities, which that pass has in hand. Backward only scales it by ``dloss``.
"""
from __future__ import annotations

from .. import ops
from .module import Module


class SoftmaxCrossEntropy(Module):
    def __init__(self, ignore_index: int = -100, reduction: str = "mean", check_labels: bool = True, device=None):
        """``check_labels=False``: see ``ops.softmax_cross_entropy_with_grad`` (no host sync per step on a GPU;
        for labels checked once up front)."""
        super().__init__(device)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.check_labels = check_labels
        self._grad = None

    def forward(self, logits, labels, count=None):
        """The loss of ``logits`` for ``labels``. ``count`` (reduction "mean" only): the number of counted rows to
        divide by, when these rows are one part of a larger batch (a rank's slice of the global batch), so that
        the parts' losses and gradients add up to the whole batch's."""
        loss, self._grad = ops.softmax_cross_entropy_with_grad(logits, labels, self.ignore_index, self.reduction,
                                                               self.check_labels, count=count, device=self.device)
        return loss

    def backward(self, dloss=1.0):
        if self._grad is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        return ops.scale_grad(self._grad, dloss, self.reduction)
