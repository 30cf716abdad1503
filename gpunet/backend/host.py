"""Host-side helpers for the layers above the backend: seeded generators and host arrays.

Parameters are drawn on the host from a seeded ``numpy.random.Generator`` and then moved to their device, so a
seed gives bit-identical initial weights on every device.
"""
from __future__ import annotations

import numpy

host_xp = numpy


def host_rng(seed):
    """A seeded NumPy Generator (``seed`` may already be a Generator, or None for fresh entropy)."""
    if isinstance(seed, numpy.random.Generator):
        return seed
    return numpy.random.default_rng(seed)


def is_host_array(a) -> bool:
    return isinstance(a, numpy.ndarray)
