"""Adam and AdamW.

``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
Adam's ``weight_decay`` is L2 added to the gradient; AdamW's is decoupled, ``w -= lr * wd * w`` before the step.
"""
from __future__ import annotations

import math

from ..kinds import UpdateOp
from .optimizer import Optimizer


def _adam_update(xp, w, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_bias2):
    """The NumPy form, in place; ``step_size = lr / (1 - beta1^t)``, ``inv_bias2 = 1 / sqrt(1 - beta2^t)``."""
    g = grad
    if weight_decay:
        if decoupled:
            w *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * w
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    denom = xp.sqrt(v)
    denom *= inv_bias2
    denom += eps
    w -= step_size * (m / denom)


ADAM_UPDATE = UpdateOp("adam_update", "optimizers", _adam_update, compiled=True)


class Adam(Optimizer):
    update_op = ADAM_UPDATE
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas}")
        self.beta1, self.beta2, self.eps, self.weight_decay = float(b1), float(b2), float(eps), float(weight_decay)

    def _bias_corrections(self):
        """(lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)) at this step."""
        t = self.step_count
        return self.lr / (1 - self.beta1 ** t), 1.0 / math.sqrt(1 - self.beta2 ** t)

    def state_lists(self, indices):
        return [[self.buffer(i, "m") for i in indices], [self.buffer(i, "v") for i in indices]]

    def hyperparameters(self):
        return (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, int(self.decoupled),
                *self._bias_corrections())


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
