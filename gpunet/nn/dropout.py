"""Inverted dropout: in training, zero each unit with probability ``p`` and scale survivors by ``1/(1-p)``, so
evaluation needs no rescaling."""
from __future__ import annotations

from .module import Module


class Dropout(Module):
    def __init__(self, p: float = 0.5, seed: int = 0, device=None):
        super().__init__(device)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self._rng = None
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        if self._rng is None:
            self._rng = self.device.seed_rng(self.seed)
        keep = self._rng.random(x.shape, dtype=x.dtype) >= self.p
        self._mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.p))
        return x * self._mask

    def reseed(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s masks from a stream of their own, so a resumed run sees the same masks."""
        self._rng = self.device.seed_rng(self.seed * 1_000_003 + epoch)

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask

    def to(self, device):
        self._rng = None
        return super().to(device)

    def extra_repr(self) -> str:
        return f"p={self.p}"
