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
