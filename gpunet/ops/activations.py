"""Pointwise activations. Each backward takes the forward *output* ``y``, which is all the derivative needs:

- ReLU:    y = max(x, 0),          dy/dx = [y > 0]
- tanh:    y = tanh(x),            dy/dx = 1 - y^2
- sigmoid: y = 1 / (1 + exp(-x)),  dy/dx = y (1 - y)

Keeping ``y`` rather than ``x`` lets a layer cache one array and lets ReLU run in place. GELU is the exception:
it is not invertible, so its backward takes the input ``x``. Each op is declared once (an ``ElementwiseOp``: its
CUDA kernel in ``kernels/elementwise.cu``, its compiled CPU kernel where there is one, its NumPy form below) and
runs on any device through ``device.run``.
"""
from __future__ import annotations

from ..kinds import ElementwiseOp
from ..numerics import quiet, widened
from .checks import checked_out, on_device, pair_on_device

__all__ = ["relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "gelu", "gelu_backward"]


def _forward(op: ElementwiseOp, x, device):
    dev, x = on_device(x, device)
    return dev.run(op, x)


def _backward(op: ElementwiseOp, y, dy, device, name="y"):
    dev, y, dy = pair_on_device(y, dy, device, name)
    return dev.run(op, y, dy)


def _in_float32_or_wider(form):
    """float16 computed in float32 (as the kernels accumulate it) and rounded once at the end: ``y * y`` of a
    float16 300 would overflow where the result, -90, does not."""
    def run(xp, x, *rest):
        if x.dtype.itemsize >= 4:
            return form(xp, x, *rest)
        return form(xp, *(widened(a) for a in (x, *rest))).astype(x.dtype, copy=False)
    return run


@_in_float32_or_wider
def _sigmoid(xp, x):
    """``1 / (1 + exp(-x))`` via ``e = exp(-|x|)``: ``1 / (1 + e)`` for x >= 0, ``e / (1 + e)`` below. Never
    overflows, and keeps full relative precision in the far negative tail (where ``1 + tanh`` would round to 0)."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


# ReLU as PyTorch: relu(NaN) is NaN (xp.maximum propagates it), relu(-0.0) is +0.0 as in the kernels (maximum
# keeps -0.0; adding 0 makes it +0.0 and changes nothing else); the backward passes dy where y > 0 or y is NaN and
# gives exactly 0 where y <= 0, even for an inf or NaN dy (a select, not dy * [y > 0], which would make 0 * inf).
RELU = ElementwiseOp("relu_forward", "elementwise", lambda xp, x: xp.maximum(x, 0) + 0, compiled=True)
RELU_BACKWARD = ElementwiseOp("relu_backward", "elementwise",
                   lambda xp, y, dy: xp.where(y <= 0, xp.zeros((), dy.dtype), dy), compiled=True)
TANH = ElementwiseOp("tanh_forward", "elementwise", _in_float32_or_wider(lambda xp, x: xp.tanh(x)))
TANH_BACKWARD = ElementwiseOp("tanh_backward", "elementwise",
                   _in_float32_or_wider(lambda xp, y, dy: dy * (1 - y * y)))
SIGMOID = ElementwiseOp("sigmoid_forward", "elementwise", _sigmoid)
SIGMOID_BACKWARD = ElementwiseOp("sigmoid_backward", "elementwise",
                      _in_float32_or_wider(lambda xp, y, dy: dy * y * (1 - y)))


def relu(x, device=None, out=None):
    """``max(x, 0)`` (NaN stays NaN), into ``out`` where given; ``out=x`` overwrites the input (nn.ReLU's
    ``inplace``: no new array in a training step)."""
    dev, x = on_device(x, device)
    return dev.run(RELU, x, out=None if out is None else checked_out(out, x, dev, x))


def relu_backward(y, dy, device=None, out=None):
    """``dy`` where ``y > 0`` (or NaN), else 0; into ``out`` where given (``out=dy`` overwrites the gradient)."""
    dev, y, dy = pair_on_device(y, dy, device, "y")
    return dev.run(RELU_BACKWARD, y, dy, out=None if out is None else checked_out(out, dy, dev, y, dy))


def tanh(x, device=None):
    return _forward(TANH, x, device)


def tanh_backward(y, dy, device=None):
    return _backward(TANH_BACKWARD, y, dy, device)


def sigmoid(x, device=None):
    return _forward(SIGMOID, x, device)


def sigmoid_backward(y, dy, device=None):
    return _backward(SIGMOID_BACKWARD, y, dy, device)


# GELU, tanh form (PyTorch's approximate="tanh"): y = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
# Since (1 + tanh(u))/2 = s = 1 / (1 + exp(-2u)), every form computes y = x s, which does not cancel where tanh(u)
# nears -1 (1 + tanh(u) does: a float32 error of 1e-5 relative at x = -3). The slope is
# s + 2 x s r u'(x), r = 1 - s = 1 / (1 + exp(2u)), u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2). NaN and inf come out
# as in PyTorch: gelu(-inf) is NaN, and so is the slope at +-inf.
GELU_BETA, GELU_KAPPA = 0.7978845608028654, 0.044715


def _gelu_u(x):
    return GELU_BETA * (x + GELU_KAPPA * x * x * x)


@_in_float32_or_wider
def _gelu(xp, x):
    with quiet(xp):  # exp overflows to inf in the far tail: part of the maths (s = 0), not worth a warning
        return x * (1 / (1 + xp.exp(-2 * _gelu_u(x))))


@_in_float32_or_wider
def _gelu_backward(xp, x, dy):
    with quiet(xp):
        return _gelu_slope(xp, x, dy)


def _gelu_slope(xp, x, dy):
    u = _gelu_u(x)
    s, r = 1 / (1 + xp.exp(-2 * u)), 1 / (1 + xp.exp(2 * u))
    du = GELU_BETA * (1 + (3 * GELU_KAPPA) * x * x)
    return dy * (s + 2 * x * s * r * du)


GELU = ElementwiseOp("gelu_forward", "elementwise", _gelu, compiled=True)
GELU_BACKWARD = ElementwiseOp("gelu_backward", "elementwise", _gelu_backward, compiled=True)


def gelu(x, device=None):
    """GELU in its tanh form, PyTorch's ``gelu(x, approximate="tanh")``."""
    return _forward(GELU, x, device)


def gelu_backward(x, dy, device=None):
    """``dy`` times GELU's slope at the *input* ``x``."""
    return _backward(GELU_BACKWARD, x, dy, device, name="x")
