"""Numerical conventions every form shares: narrow floats are computed in float32, and the documented NaN and inf
cases raise no floating-point warnings."""
from __future__ import annotations

import contextlib

import numpy

from .dtypes import BY_NAME, NAMES


def wide_dtype(dtype) -> numpy.dtype:
    """The dtype a computation on ``dtype`` runs in (``gpunet.dtypes``: float16 in float32, as the kernels
    accumulate it, rounded once at the end; float32 and float64 as they are)."""
    dtype = numpy.dtype(dtype)
    entry = BY_NAME.get(dtype.name)
    return dtype if entry is None or entry.accumulate == dtype.name else numpy.dtype(entry.accumulate)


def widened(x):
    """``x`` in :func:`wide_dtype` (no copy where it already is)."""
    return x.astype(wide_dtype(x.dtype), copy=False)


def quiet(xp=numpy):
    """NumPy's floating-point warnings silenced for the documented -inf/NaN cases; CuPy never warns."""
    errstate = getattr(xp, "errstate", None)
    return contextlib.nullcontext() if errstate is None else errstate(invalid="ignore", over="ignore", divide="ignore")


def finite_floats(device, value, dtype, what: str):
    """``value`` (a loaded weight or optimizer buffer) as ``device``'s array of ``dtype``, or a ValueError naming
    ``what``: it must be real floating point, and finite once converted (a float64 1e300 is inf in float32)."""
    if getattr(value, "dtype", None) is None or value.dtype.kind != "f":
        raise ValueError(f"{what} holds {getattr(value, 'dtype', type(value).__name__)} values: it must be real "
                         f"floating point ({', '.join(NAMES)})")
    converted = device.asarray(value, dtype=dtype)
    if not bool(device.xp.isfinite(converted).all()):
        raise ValueError(f"{what} holds NaN or inf (or values too large for {numpy.dtype(dtype)})")
    return converted
