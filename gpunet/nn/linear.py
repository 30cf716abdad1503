"""Fully connected layer ``y = x W + b``, ``W`` of shape (in_features, out_features)."""
from __future__ import annotations

import numpy

from .. import ops
from ..ops.linear import ACTIVATIONS as FUSED_ACTIVATIONS
from .init import init_weight
from .module import Module


class Linear(Module):
    fusable_activations = tuple(a for a in FUSED_ACTIVATIONS if a is not None)  # ("relu",): ops.linear's

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "he", rng=0,
                 dtype="float32", device=None):
        super().__init__(device)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear needs positive sizes, got in_features={in_features}, out_features={out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = self.add_parameter("weight", init_weight(init, in_features, out_features, rng, dtype))
        self.bias = None
        if bias:
            self.bias = self.add_parameter("bias", numpy.zeros(out_features, dtype=dtype))
        self.input_grad = True  # the first layer of a network has no use for dL/dx: set False to skip it
        self._x = None

    def forward(self, x, activation=None):
        """``x W + b``; ``activation="relu"`` applies ReLU in the bias's pass (``nn.Sequential`` asks for it when
        the next layer's ``fused_activation`` is one of ``fusable_activations``)."""
        x = self.device.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) expects input of shape "
                             f"(N, {self.in_features}), got {tuple(x.shape)}")
        self._x = x
        return ops.linear(x, self.weight.data, None if self.bias is None else self.bias.data, device=self.device,
                          activation=activation)

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        self.device.matmul(self._x.T, dy, out=self.weight.grad)
        if self.bias is not None:
            dy.sum(axis=0, out=self.bias.grad)
        return self.device.matmul(dy, self.weight.data.T) if self.input_grad else None

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"
