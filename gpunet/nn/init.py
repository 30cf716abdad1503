"""Weight initialisers, drawn on the host from a seeded generator.

He (Kaiming) normal, ``std = sqrt(2 / fan_in)``, keeps the variance of ReLU activations constant across layers
(ReLU zeroes half of its input). Xavier (Glorot) uniform, ``limit = sqrt(6 / (fan_in + fan_out))``, does the
same for tanh and sigmoid, which are linear near 0.
"""
from __future__ import annotations

import math

from ..seeding import host_rng

INITS = ("he", "xavier")


def he_normal(fan_in: int, fan_out: int, rng, dtype="float32"):
    return host_rng(rng).normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(dtype)


def xavier_uniform(fan_in: int, fan_out: int, rng, dtype="float32"):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return host_rng(rng).uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


def init_weight(kind: str, fan_in: int, fan_out: int, rng, dtype="float32"):
    if kind == "he":
        return he_normal(fan_in, fan_out, rng, dtype)
    if kind == "xavier":
        return xavier_uniform(fan_in, fan_out, rng, dtype)
    raise ValueError(f"unknown initialiser {kind!r}: expected one of {INITS}")
