"""Seeded host generators. Parameters, shuffles and toy data are drawn on the host from a seeded
``numpy.random.Generator`` and then moved to their device, so a seed gives bit-identical results on every device."""
from __future__ import annotations

import numpy


def host_rng(seed):
    """A seeded NumPy Generator (``seed`` may already be a Generator, or None for fresh entropy)."""
    if isinstance(seed, numpy.random.Generator):
        return seed
    return numpy.random.default_rng(seed)
