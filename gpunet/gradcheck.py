"""Finite-difference gradient checks, the ground truth every backward in gpunet is tested against.

For ``f: R^n -> R^m`` and a fixed random projection ``w``, the scalar ``L(x) = sum(w * f(x))`` has gradient
``J^T w``, which is exactly what a backward given ``dy = w`` must return. Central differences
``(L(x + h e_i) - L(x - h e_i)) / 2h`` approximate it with error O(h^2); in float64 with h = 1e-6 that leaves a
relative error far below 1e-6 for a correct backward and near 1 for a wrong one.
"""
from __future__ import annotations

import numpy as np

from .seeding import host_rng


def numerical_gradient(loss, x, eps: float = 1e-6):
    """Central-difference gradient of the scalar ``loss(x)`` w.r.t. the host float64 array ``x``."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = float(loss(x))
        flat[i] = saved - eps
        minus = float(loss(x))
        flat[i] = saved
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic, numeric) -> float:
    """``|a - n| / max(|a|, |n|)`` over the whole array (0 when both vanish)."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(n))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - n) / scale)


def check_backward(forward, backward, x, seed: int = 0, eps: float = 1e-6, to_numpy=np.asarray):
    """Relative error between ``backward(x, y, dy)`` and the numerical gradient of ``sum(dy * forward(x))``.

    ``forward(x) -> y`` and ``backward(x, y, dy) -> dx`` take host float64 arrays and may run on any device;
    ``to_numpy`` brings their results back.
    """
    x = np.array(x, dtype=np.float64)
    y = to_numpy(forward(x))
    dy = host_rng(seed).standard_normal(np.shape(y))
    analytic = to_numpy(backward(x, y, dy))
    numeric = numerical_gradient(lambda v: np.sum(dy * to_numpy(forward(v))), x, eps)
    return relative_error(analytic, numeric)
