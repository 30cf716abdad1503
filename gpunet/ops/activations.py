"""Pointwise activations. Each backward takes the forward *output* ``y``, which is all the derivative needs:

- ReLU:    y = max(x, 0),          dy/dx = [y > 0]
- tanh:    y = tanh(x),            dy/dx = 1 - y^2
- sigmoid: y = 1 / (1 + exp(-x)),  dy/dx = y (1 - y)

Keeping ``y`` rather than ``x`` lets a layer cache one array and lets ReLU run in place. Each op is declared once
(``Op``: its CUDA kernel in ``kernels/elementwise.cu``, its compiled CPU kernel where there is one, its NumPy
form below) and runs on any device through ``device.run``.
"""
from __future__ import annotations

from ..devices import Op, device_of
from .checks import promoted, require_floating, require_same_shape

__all__ = ["relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward"]


def _forward(op: Op, x, device):
    dev = device_of(x, device)
    x = dev.asarray(x)
    require_floating(x, "x")
    return dev.run(op, x)


def _backward(op: Op, y, dy, device):
    dev = device_of(y, device)
    y, dy = dev.asarray(y), dev.asarray(dy)
    require_floating(y, "y")
    require_floating(dy, "dy")
    require_same_shape(y, dy)
    return dev.run(op, *promoted(dev.xp, y, dy))


def _sigmoid(xp, x):
    """``1 / (1 + exp(-x))`` via ``e = exp(-|x|)``: ``1 / (1 + e)`` for x >= 0, ``e / (1 + e)`` below. Never
    overflows, and keeps full relative precision in the far negative tail (where ``1 + tanh`` would round to 0)."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


RELU = Op("relu_forward", "elementwise", "elementwise", lambda xp, x: xp.maximum(x, 0), compiled=True)
RELU_BACKWARD = Op("relu_backward", "elementwise", "elementwise", lambda xp, y, dy: dy * (y > 0), compiled=True)
TANH = Op("tanh_forward", "elementwise", "elementwise", lambda xp, x: xp.tanh(x))
TANH_BACKWARD = Op("tanh_backward", "elementwise", "elementwise", lambda xp, y, dy: dy * (1 - y * y))
SIGMOID = Op("sigmoid_forward", "elementwise", "elementwise", _sigmoid)
SIGMOID_BACKWARD = Op("sigmoid_backward", "elementwise", "elementwise", lambda xp, y, dy: dy * y * (1 - y))


def relu(x, device=None):
    return _forward(RELU, x, device)


def relu_backward(y, dy, device=None):
    return _backward(RELU_BACKWARD, y, dy, device)


def tanh(x, device=None):
    return _forward(TANH, x, device)


def tanh_backward(y, dy, device=None):
    return _backward(TANH_BACKWARD, y, dy, device)


def sigmoid(x, device=None):
    return _forward(SIGMOID, x, device)


def sigmoid_backward(y, dy, device=None):
    return _backward(SIGMOID_BACKWARD, y, dy, device)
