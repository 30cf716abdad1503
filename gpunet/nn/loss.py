"""Softmax cross-entropy as a layer: forward gives the loss, backward the fused gradient ``(p - y) / N``."""
from __future__ import annotations

from .. import ops
from .module import Module


class SoftmaxCrossEntropy(Module):
    def __init__(self, ignore_index: int = -100, reduction: str = "mean", device=None):
        super().__init__(device)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.probs = None
        self._labels = None

    def forward(self, logits, labels):
        loss, self.probs = ops.softmax_cross_entropy(logits, labels, self.ignore_index, self.reduction,
                                                     device=self.device)
        self._labels = labels
        return loss

    def backward(self, dloss=1.0):
        if self.probs is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        return ops.softmax_cross_entropy_backward(self.probs, self._labels, dloss, self.ignore_index,
                                                  self.reduction, device=self.device)
