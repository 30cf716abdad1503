"""A chain of layers: forward left to right, backward right to left (the chain rule, one layer at a time)."""
from __future__ import annotations

from .module import Module


class Sequential(Module):
    def __init__(self, *layers: Module, device=None):
        super().__init__(device if device is not None else (layers[0].device if layers else None))
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Modules, got {type(layer).__name__} at position {i}")
            self.add_child(str(i), layer)
        self.to(self.device)

    @property
    def layers(self) -> list[Module]:
        return list(self._children.values())

    def forward(self, x):
        for layer in self._children.values():
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self._children.values()):
            dy = layer.backward(dy)
            if dy is None:
                break
        return dy
