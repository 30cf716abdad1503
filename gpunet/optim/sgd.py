"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

``g = grad + wd * w``; ``v = mu * v + g``; step along ``v`` (heavy ball) or ``g + mu * v`` (Nesterov);
``w -= lr * step``. The same form as PyTorch's SGD.
"""
from __future__ import annotations

from ..kinds import UpdateOp
from .optimizer import Optimizer


def _sgd_update(xp, w, grad, velocity, lr, momentum, nesterov, weight_decay):
    """The NumPy form, in place; ``velocity`` is None without momentum."""
    g = grad
    if weight_decay:
        g = g + weight_decay * w
    if velocity is not None:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    w -= lr * g


SGD_UPDATE = UpdateOp("sgd_update", "optimizers", _sgd_update, compiled=True)


class SGD(Optimizer):
    update_op = SGD_UPDATE

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), nesterov, float(weight_decay)

    def state_lists(self, indices):
        return [[self.buffer(i, "velocity") for i in indices] if self.momentum else None]

    def hyperparameters(self):
        return (self.lr, self.momentum, int(self.nesterov), self.weight_decay)
