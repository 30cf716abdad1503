"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

``g = grad + wd * w``; ``v = mu * v + g``; step along ``v`` (heavy ball) or ``g + mu * v`` (Nesterov);
``w -= lr * step``. The same form as PyTorch's SGD.
"""
from __future__ import annotations

from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), nesterov, float(weight_decay)

    compiled_op = "sgd_update"

    def update_all(self, compiled):
        velocities = [self.buffer(i, "velocity") for i in range(len(self.params))] if self.momentum else None
        compiled([p.data for p in self.params], [p.grad for p in self.params], velocities, self.lr, self.momentum,
                 self.nesterov, self.weight_decay)

    def update(self, index, param):
        kernels = param.device.kernels
        velocity = self.buffer(index, "velocity") if self.momentum else None
        if kernels is not None:
            kernels.sgd_update(param.data, param.grad, velocity, self.lr, self.momentum, self.nesterov,
                               self.weight_decay)
            return
        g = param.grad
        if self.weight_decay:
            g = g + self.weight_decay * param.data
        if velocity is not None:
            velocity *= self.momentum
            velocity += g
            g = g + self.momentum * velocity if self.nesterov else velocity
        param.data -= self.lr * g
