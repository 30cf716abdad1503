"""The functional core: every op takes ``device=None`` (the device the input lives on) and runs on any device."""
from .activations import relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward
from .cross_entropy import (
    scale_grad,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_with_grad,
)
from .linear import linear, linear_backward
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward, softmax_jacobian

__all__ = [
    "softmax", "softmax_backward", "softmax_jacobian", "log_softmax", "log_softmax_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward", "softmax_cross_entropy_with_grad", "scale_grad",
    "relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward",
    "linear", "linear_backward",
]
