"""gpunet's settings from the environment (``GPUNET_*``), read at every call where the hot path consults them.

Read at each call, not once at import, so that a setting changed while a process runs (as tests and notebooks do)
takes effect at the next op. ``os.environ.get`` costs about 0.7 us (key encoding and the Mapping machinery), and a
small training step consults settings a few dozen times: on CPython this reads ``os.environ``'s own dict, which
``os.environ[...] = ...``, ``del`` and ``putenv`` through ``os.environ`` keep current, in about 30 ns.
"""
from __future__ import annotations

import functools
import os

_DATA = getattr(os.environ, "_data", None)
_ENCODE = getattr(os.environ, "encodekey", None)
_DECODE = getattr(os.environ, "decodevalue", None)


@functools.cache
def _key(name: str):
    return _ENCODE(name)


def setting(name: str, default: str | None = None) -> str | None:
    """``os.environ.get(name, default)``, fast."""
    if _DATA is None or _ENCODE is None or _DECODE is None:
        return os.environ.get(name, default)
    value = _DATA.get(_key(name))
    return default if value is None else _DECODE(value)
