"""Layers with explicit forward and backward."""
from . import activation as _activation
from .activation import *  # noqa: F401,F403
from .dropout import Dropout
from .linear import Linear
from .linear_cross_entropy import LinearCrossEntropy
from .loss import SoftmaxCrossEntropy
from .mlp import mlp
from .module import Module, Parameter
from .sequential import Sequential

__all__ = ["Module", "Parameter", "Linear", *_activation.__all__, "Dropout", "Sequential", "SoftmaxCrossEntropy",
           "LinearCrossEntropy", "mlp"]
