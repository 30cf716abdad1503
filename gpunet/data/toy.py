"""Toy 2-D classification sets for quick demos and tests."""
from __future__ import annotations

import numpy as np

from ..seeding import host_rng


def spiral(points_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """The cs231n spiral: ``classes`` interleaved arms, not linearly separable. Returns (x float32, y int64)."""
    rng = host_rng(seed)
    n = points_per_class * classes
    x = np.zeros((n, 2), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    for k in range(classes):
        idx = slice(points_per_class * k, points_per_class * (k + 1))
        radius = np.linspace(0.0, 1.0, points_per_class)
        theta = np.linspace(k * 4.0, (k + 1) * 4.0, points_per_class) + rng.normal(size=points_per_class) * noise
        x[idx] = np.c_[radius * np.sin(theta), radius * np.cos(theta)]
        y[idx] = k
    return x, y


def two_moons(n: int = 200, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles (as scikit-learn's make_moons). Returns (x float32, y int64)."""
    rng = host_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.c_[np.cos(t_out), np.sin(t_out)], np.c_[1 - np.cos(t_in), 0.5 - np.sin(t_in)]])
    x += rng.normal(scale=noise, size=x.shape)
    y = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    return x.astype(np.float32), y
