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


def _compiled(dev, op, *arrays):
    """The CPU's compiled, threaded form of ``op`` over ``arrays`` (C-contiguous, one dtype), as a new array; None
    where there is none."""
    if any(not a.flags.c_contiguous or a.dtype != arrays[0].dtype for a in arrays):
        return None
    compiled = dev.compiled_block(op, arrays[0].dtype)
    if compiled is None:
        return None
    out = dev.xp.empty_like(arrays[0])
    compiled(*arrays, out)
    return out


def relu(x, device=None):
    dev, x = _input(x, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("relu_forward", x)
    out = _compiled(dev, "relu_forward", x)
    return dev.xp.maximum(x, 0) if out is None else out


def relu_backward(y, dy, device=None):
    dev, y, dy = _pair(y, dy, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("relu_backward", y, dy)
    out = _compiled(dev, "relu_backward", y, dy)
    return dy * (y > 0) if out is None else out


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
    """``1 / (1 + exp(-x))`` via ``e = exp(-|x|)``: ``1 / (1 + e)`` for x >= 0, ``e / (1 + e)`` below. Never
    overflows, and keeps full relative precision in the far negative tail (where ``1 + tanh`` would round to 0)."""
    dev, x = _input(x, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("sigmoid_forward", x)
    xp = dev.xp
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(y, dy, device=None):
    dev, y, dy = _pair(y, dy, device)
    if dev.kernels is not None:
        return dev.kernels.elementwise("sigmoid_backward", y, dy)
    return dy * y * (1 - y)
