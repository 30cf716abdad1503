"""Adam and AdamW.

``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
Adam's ``weight_decay`` is L2 added to the gradient; AdamW's is decoupled, ``w -= lr * wd * w`` before the step.
"""
from __future__ import annotations

import math

from .optimizer import Optimizer


class Adam(Optimizer):
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas}")
        self.beta1, self.beta2, self.eps, self.weight_decay = float(b1), float(b2), float(eps), float(weight_decay)

    compiled_op = "adam_update"

    def _bias_corrections(self):
        """(lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)) at this step."""
        t = self.step_count
        return self.lr / (1 - self.beta1 ** t), 1.0 / math.sqrt(1 - self.beta2 ** t)

    def update_all(self, compiled):
        n = range(len(self.params))
        compiled([p.data for p in self.params], [p.grad for p in self.params], [self.buffer(i, "m") for i in n],
                 [self.buffer(i, "v") for i in n], self.lr, self.beta1, self.beta2, self.eps, self.weight_decay,
                 self.decoupled, *self._bias_corrections())

    def update(self, index, param):
        m, v = self.buffer(index, "m"), self.buffer(index, "v")
        step_size, inv_bias2 = self._bias_corrections()
        kernels = param.device.kernels
        if kernels is not None:
            kernels.adam_update(param.data, param.grad, m, v, self.lr, self.beta1, self.beta2, self.eps,
                                self.weight_decay, self.decoupled, step_size, inv_bias2)
            return
        g = param.grad
        if self.weight_decay:
            if self.decoupled:
                param.data *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * param.data
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        denom = param.device.xp.sqrt(v)
        denom *= inv_bias2
        denom += self.eps
        param.data -= step_size * (m / denom)


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
