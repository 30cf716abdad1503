"""Gradient-norm clipping with PyTorch's ``clip_grad_norm_`` semantics, the one place gpunet clips.

The total norm is the L2 norm over every parameter's gradient taken together (the norm of the per-tensor norms);
when it exceeds ``max_norm`` every gradient is multiplied by ``max_norm / (total + 1e-6)``. The factor is computed
and applied as a device array, never read back to the host, so that clipping on a GPU costs no synchronisation.
"""
from __future__ import annotations

import math

from ..numerics import quiet, wide_dtype

EPSILON = 1e-6  # PyTorch's: keeps the factor finite for an all-zero gradient


def clip_grad_norm(params, max_norm: float):
    """Scale the gradients of ``params`` in place so that their total L2 norm is at most ``max_norm``; return the
    total norm before clipping as a 0-d device array (float32 for float16/float32 gradients, else float64).

    Exactly as ``torch.nn.utils.clip_grad_norm_(params, max_norm)``: ``scale = max_norm / (norm + 1e-6)``, applied
    only where it is below 1 (a gradient under the limit is left bit for bit as it was). A NaN or inf in any
    gradient makes the norm NaN or inf, and the gradients NaN or 0, as in PyTorch: the training loop's divergence
    check then names the step."""
    params = list(params)
    if not params:
        raise ValueError("clip_grad_norm got an empty parameter list")
    require_max_norm(max_norm)
    xp = params[0].device.xp
    accumulate = max((wide_dtype(p.grad.dtype) for p in params), key=lambda dtype: dtype.itemsize)
    with quiet(xp):  # an inf gradient: inf * 0 = NaN, as documented above
        norms = xp.stack([xp.linalg.norm(p.grad.ravel().astype(accumulate, copy=False)) for p in params])
        total = xp.linalg.norm(norms)
        scale = xp.minimum(max_norm / (total + EPSILON), 1.0)
        for p in params:
            p.grad *= scale.astype(p.grad.dtype)
    return total


def require_max_norm(max_norm) -> None:
    """ValueError unless ``max_norm`` is a positive finite number (a bool is not one)."""
    if isinstance(max_norm, bool) or not (isinstance(max_norm, (int, float)) and math.isfinite(max_norm)
                                          and max_norm > 0):
        raise ValueError(f"the max gradient norm must be a positive finite number, got {max_norm!r}")
