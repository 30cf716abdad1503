"""Pointwise activations. Each backward takes the forward *output* ``y``, which is all the derivative needs:

- ReLU:    y = max(x, 0),          dy/dx = [y > 0]
- tanh:    y = tanh(x),            dy/dx = 1 - y^2
- sigmoid: y = 1 / (1 + exp(-x)),  dy/dx = y (1 - y)

Keeping ``y`` rather than ``x`` lets a layer cache one array and lets ReLU run in place.
"""
from __future__ import annotations

from ..backend import device_of
from .checks import require_floating, require_same_shape


def _input(x, device, name="x"):
    dev = device_of(x, device)
    x = dev.asarray(x)
    require_floating(x, name)
    return dev, x


def _pair(y, dy, device):
    dev, y = _input(y, device, "y")
    dy = dev.asarray(dy)
    require_floating(dy, "dy")
    require_same_shape(y, dy)
    return dev, y, dy


def relu(x, device=None):
    dev, x = _input(x, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("relu_forward", x)
    return dev.xp.maximum(x, 0)


def relu_backward(y, dy, device=None):
    dev, y, dy = _pair(y, dy, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("relu_backward", y, dy)
    return dy * (y > 0)


def tanh(x, device=None):
    dev, x = _input(x, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("tanh_forward", x)
    return dev.xp.tanh(x)


def tanh_backward(y, dy, device=None):
    dev, y, dy = _pair(y, dy, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("tanh_backward", y, dy)
    return dy * (1 - y * y)


def sigmoid(x, device=None):
    """``1 / (1 + exp(-x))`` computed as ``0.5 * (1 + tanh(x / 2))``, which never overflows."""
    dev, x = _input(x, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("sigmoid_forward", x)
    y = dev.xp.tanh(x * 0.5)
    y += 1
    y *= 0.5
    return y


def sigmoid_backward(y, dy, device=None):
    dev, y, dy = _pair(y, dy, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("sigmoid_backward", y, dy)
    return dy * y * (1 - y)
