"""Layers with explicit forward and backward."""
from .activation import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .dropout import Dropout
from .linear import Linear
from .loss import SoftmaxCrossEntropy
from .mlp import mlp
from .module import Module, Parameter
from .sequential import Sequential

__all__ = ["Module", "Parameter", "Linear", "ReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Dropout",
           "Sequential", "SoftmaxCrossEntropy", "mlp"]
