"""Activation layers. Each caches its forward output, which is all its backward needs (see ``gpunet.ops``), but
GELU, which caches its input."""
from __future__ import annotations

from .. import ops
from ..ops.checks import writable_like
from .module import Module

__all__ = ["ReLU", "Tanh", "Sigmoid", "GELU", "Softmax", "LogSoftmax", "ACTIVATIONS"]


class _Pointwise(Module):
    init = "xavier"  # the weight initialiser of the Linear layer before it in an mlp (gpunet.nn.init)
    saves_input = False  # the backward takes the forward's input instead of its output
    _forward = staticmethod(lambda x, device: x)
    _backward = staticmethod(lambda y, dy, device: dy)

    def __init__(self, device=None):
        super().__init__(device)
        self._saved = None

    def forward(self, x):
        y = type(self)._forward(x, device=self.device)
        self._saved = self.device.asarray(x) if self.saves_input else y
        return y

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return type(self)._backward(self._saved, dy, device=self.device)


class ReLU(_Pointwise):
    """``inplace=True`` writes the output over the input, as PyTorch's ``ReLU(inplace=True)``; inside a
    ``Sequential`` the backward also writes over a gradient the next layer has just made (never over the one the
    caller passed in). For a layer whose input nobody else keeps (``nn.mlp``'s, after a Linear) that saves two new
    arrays and two cold passes over memory in every step."""
    init = "he"
    _forward = staticmethod(ops.relu)
    _backward = staticmethod(ops.relu_backward)

    def __init__(self, inplace: bool = False, device=None):
        super().__init__(device)
        self.inplace = inplace

    @property
    def fused_activation(self):
        """In place, the Linear before it may apply it (its output is then nobody's but this layer's)."""
        return "relu" if self.inplace else None

    @property
    def overwrites_gradient(self):
        return self.inplace

    def forward(self, x):
        x = self.device.asarray(x)
        if not (self.inplace and x.dtype.kind == "f" and writable_like(x, x, self.device)):
            return super().forward(x)  # not an array it can overwrite: a new one, as without inplace
        self._saved = ops.relu(x, device=self.device, out=x)
        return self._saved

    def backward(self, dy, overwrite: bool = False):
        """``overwrite``: ``dy`` is a temporary of the caller's (Sequential passes True for a gradient the next
        layer made), which an in-place ReLU may write its result over."""
        if self._saved is None:
            return super().backward(dy)
        dy = self.device.asarray(dy)
        if not (self.inplace and overwrite and writable_like(dy, self._saved, self.device)):
            return super().backward(dy)
        return ops.relu_backward(self._saved, dy, device=self.device, out=dy)

    def adopt(self, y):
        """Keep ``y``, ReLU already applied (by a fused Linear), as this layer's forward output."""
        self._saved = y
        return y

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Tanh(_Pointwise):
    _forward = staticmethod(ops.tanh)
    _backward = staticmethod(ops.tanh_backward)


class Sigmoid(_Pointwise):
    _forward = staticmethod(ops.sigmoid)
    _backward = staticmethod(ops.sigmoid_backward)


class GELU(_Pointwise):
    """GELU, tanh form (PyTorch's ``approximate="tanh"``)."""
    init = "he"
    saves_input = True  # GELU is not invertible: its slope needs x
    _forward = staticmethod(ops.gelu)
    _backward = staticmethod(ops.gelu_backward)


class Softmax(_Pointwise):
    """Softmax over the last axis; backward is the Jacobian-vector product ``y * (dy - sum(dy * y))``."""
    _forward = staticmethod(ops.softmax)
    _backward = staticmethod(ops.softmax_backward)


class LogSoftmax(_Pointwise):
    _forward = staticmethod(ops.log_softmax)
    _backward = staticmethod(ops.log_softmax_backward)


# The hidden activations of ``mlp`` and ``gpunet train --activation``, by name.
ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "gelu": GELU}
