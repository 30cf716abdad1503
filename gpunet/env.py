"""gpunet's settings from the environment (``GPUNET_*``), read at every call where the hot path consults them.

Read at each call, not once at import, so that a setting changed while a process runs (as tests and notebooks do)
takes effect at the next op. ``os.environ.get`` costs about half a microsecond (key encoding and the Mapping
machinery); a CPU op reads two settings per call (``CpuKernels.compiled``) and a host matrix product one, never
one per element or per tensor.
"""
from __future__ import annotations

import os


def setting(name: str, default: str | None = None) -> str | None:
    """``os.environ.get(name, default)``: the one way gpunet's hot path reads a setting."""
    return os.environ.get(name, default)


def seconds_setting(name: str, default: float, *, zero_allowed: bool, environ=os.environ) -> float:
    """``$name`` as a number of seconds, else ``default`` when unset or blank. A value that is not a finite
    number, is negative (or zero unless ``zero_allowed``) raises ``ValueError`` naming it: a mistyped timeout
    silently replaced by the default would hide the mistake until the wait it was meant to bound."""
    text = environ.get(name, "")
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")) or (value == 0 and not zero_allowed):
        raise ValueError(f"{name}={text!r}: must be a number of seconds {'>=' if zero_allowed else '>'} 0")
    return value
