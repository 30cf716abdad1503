"""The affine map ``y = x W + b`` with ``W`` of shape (in_features, out_features), and its backward.

With ``dy = dL/dy`` of shape (N, out): ``dx = dy W^T``, ``dW = x^T dy``, ``db = sum over the batch of dy``.
Matrix products stay with the BLAS of the device (OpenBLAS/MKL through NumPy, cuBLAS through CuPy).
"""
from __future__ import annotations

from ..kinds import BiasAddOp
from .activations import RELU
from .checks import native, on_device, require_ndim

__all__ = ["linear", "linear_backward"]


def _bias_add(xp, y, bias):
    y += bias
    return y


def _bias_relu(xp, y, bias):
    y += bias
    xp.maximum(y, 0, out=y)  # NaN stays NaN, as relu
    y += 0  # and -0.0 becomes +0.0, as in the kernels
    return y


BIAS_ADD = BiasAddOp("bias_add", "elementwise", _bias_add, compiled=True)
# The bias and the ReLU after it in one pass over the product (nn.Sequential runs a Linear and an in-place ReLU
# so); bit for bit the two passes it replaces.
BIAS_RELU = BiasAddOp("bias_relu", "elementwise", _bias_relu, compiled=True)
ACTIVATIONS = (None, "relu")


def linear(x, weight, bias=None, device=None, activation=None):
    """``x W + b``, then ``activation`` (None, or "relu" in the same pass as the bias: ``relu(x W + b)``)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear fuses activation None or 'relu', got {activation!r}")
    dev, x = on_device(x, device)
    weight = native(dev.asarray(weight))
    require_ndim(x, 2, "x")
    require_ndim(weight, 2, "weight")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features (shape {tuple(x.shape)}) but weight expects "
                         f"{weight.shape[0]} (shape {tuple(weight.shape)})")
    y = dev.matmul(x, weight)
    if bias is not None:
        bias = native(dev.asarray(bias))
        if tuple(bias.shape) != (weight.shape[1],):
            raise ValueError(f"bias must have shape ({weight.shape[1]},), got {tuple(bias.shape)}")
        return dev.run(BIAS_RELU if activation == "relu" else BIAS_ADD, y, bias.astype(y.dtype, copy=False))
    if activation == "relu":
        y = dev.run(RELU, y, out=y)
    return y


def linear_backward(x, weight, dy, device=None):
    """Return ``(dx, dweight, dbias)``."""
    dev, x = on_device(x, device)
    weight, dy = native(dev.asarray(weight)), native(dev.asarray(dy))
    require_ndim(x, 2, "x")
    require_ndim(weight, 2, "weight")
    require_ndim(dy, 2, "dy")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features (shape {tuple(x.shape)}) but weight expects "
                         f"{weight.shape[0]} (shape {tuple(weight.shape)})")
    if dy.shape != (x.shape[0], weight.shape[1]):
        raise ValueError(f"dy must have shape {(x.shape[0], weight.shape[1])}, got {tuple(dy.shape)}")
    return dev.matmul(dy, weight.T), dev.matmul(x.T, dy), dy.sum(axis=0)
