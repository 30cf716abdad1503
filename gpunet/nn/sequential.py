"""A chain of layers: forward left to right, backward right to left (the chain rule, one layer at a time).

Layers declare what may be fused (``Module.fusable_activations``, ``fused_activation``): a Linear followed by an
in-place ReLU runs as one op, the bias and the ReLU in one pass over the product
(``ops.linear(..., activation="relu")``), the ReLU then keeping that output as its own forward would
(``adopt``). The results are bit for bit those of the two layers run one after the other. A layer that says it
``overwrites_gradient`` (an in-place ReLU) may write its backward over a gradient the next layer made.
"""
from __future__ import annotations

from .module import Module


def _fuses(layer, following) -> bool:
    return following.fused_activation is not None and following.fused_activation in layer.fusable_activations


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
                x = layers[i + 1].adopt(layers[i].forward(x, activation=layers[i + 1].fused_activation))
                i += 2
            else:
                x = layers[i].forward(x)
                i += 1
        return x

    def backward(self, dy):
        given = dy
        for layer in reversed(self._children.values()):
            if layer.overwrites_gradient:
                # A gradient the next layer made is ours to overwrite; the caller's (or a view of it) is not.
                dy = layer.backward(dy, overwrite=not self.device.xp.may_share_memory(dy, given))
            else:
                dy = layer.backward(dy)
            if dy is None:
                break
        return dy
