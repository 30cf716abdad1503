"""A chain of layers: forward left to right, backward right to left (the chain rule, one layer at a time).

One fusion: a Linear followed by an in-place ReLU runs as one op, the bias and the ReLU in one pass over the
product (``ops.linear(..., activation="relu")``), the ReLU then keeping that output as its own forward would. The
results are bit for bit those of the two layers run one after the other.
"""
from __future__ import annotations

from .activation import ReLU
from .linear import Linear
from .module import Module


def _fuses(layer, following) -> bool:
    return type(layer) is Linear and type(following) is ReLU and following.inplace


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
        layers = list(self._children.values())
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _fuses(layers[i], layers[i + 1]):
                x = layers[i + 1].adopt(layers[i].forward(x, activation="relu"))
                i += 2
            else:
                x = layers[i].forward(x)
                i += 1
        return x

    def backward(self, dy):
        given = dy
        for layer in reversed(self._children.values()):
            if type(layer) is ReLU and layer.inplace:
                # A gradient the next layer made is ours to overwrite; the caller's (or a view of it) is not.
                dy = layer.backward(dy, overwrite=not self.device.xp.may_share_memory(dy, given))
            else:
                dy = layer.backward(dy)
            if dy is None:
                break
        return dy
