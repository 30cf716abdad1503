"""The multilayer perceptron the CLI trains: Linear, activation, (dropout), ..., Linear to logits."""
from __future__ import annotations

from ..seeding import host_rng
from .activation import ACTIVATIONS, ReLU
from .dropout import Dropout
from .linear import Linear
from .sequential import Sequential


def mlp(sizes, activation: str = "relu", dropout: float = 0.0, seed: int = 0, dtype="float32", device=None):
    """``sizes`` = [inputs, hidden..., classes]. Each activation names its initialiser (He for ReLU, Xavier for
    tanh and sigmoid)."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) <= 0:
        raise ValueError(f"mlp needs at least an input and an output size, all positive; got {sizes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: expected one of {sorted(ACTIVATIONS)}")
    rng = host_rng(seed)
    init = ACTIVATIONS[activation].init
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = Linear(fan_in, fan_out, init=init, rng=rng, dtype=dtype, device=device)
        linear.input_grad = i > 0
        layers.append(linear)
        if i < len(sizes) - 2:
            # A Linear's output and the gradient coming back into it are new arrays nobody else keeps: ReLU may
            # overwrite them.
            layers.append(ReLU(inplace=True, device=device) if activation == "relu"
                          else ACTIVATIONS[activation](device=device))
            if dropout > 0:
                layers.append(Dropout(dropout, seed=seed + 1000 + i, device=device))
    return Sequential(*layers, device=device)
