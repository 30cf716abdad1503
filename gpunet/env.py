"""gpunet's settings from the environment (``GPUNET_*``), read at every call where the hot path consults them.

Read at each call, not once at import, so that a setting changed while a process runs (as tests and notebooks do)
takes effect at the next op. ``os.environ.get`` costs a few hundred nanoseconds (key encoding and the Mapping
machinery); an op reads at most two settings per call, never one per element or per tensor (measured in
``docs/performance.md``: about 1 us of a 20-40 us small softmax on the CPU).
"""
from __future__ import annotations

import os


def setting(name: str, default: str | None = None) -> str | None:
    """``os.environ.get(name, default)``: the one way gpunet's hot path reads a setting."""
    return os.environ.get(name, default)
