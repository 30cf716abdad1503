"""The simulated GPU's streams and events (``gpunet.devices.simgpu``), and its count of host synchronisations:
work there runs at once, so a stream orders nothing; what is kept is what a test asserts, that a step waits for
the GPU nowhere (each ``synchronize`` here, and each read of a device value there, is counted)."""
from __future__ import annotations

import threading
import time

_state = threading.local()
_count = [0]


def synced() -> None:
    """One more host synchronisation."""
    _count[0] += 1


def host_syncs() -> int:
    """Host synchronisations so far, in this process."""
    return _count[0]


class Stream:
    """``cupy.cuda.Stream``: work here runs at once, so a stream only orders nothing and counts its syncs."""

    _next_ptr = 1

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0 if null else Stream._next_ptr
        Stream._next_ptr += not null

    def synchronize(self):
        synced()

    def __enter__(self):
        _state.streams = [*getattr(_state, "streams", []), self]
        return self

    def __exit__(self, *exc):
        _state.streams = _state.streams[:-1]

    def use(self):
        _state.streams = [self]
        return self


def get_current_stream(device_id=None):
    streams = getattr(_state, "streams", [])
    return streams[-1] if streams else Stream(null=True)


class Event:
    """``cupy.cuda.Event``: a time stamp (work has finished when it is recorded)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        synced()

    @property
    def done(self):
        return True


def get_elapsed_time(start: Event, end: Event) -> float:
    return (end.time - start.time) * 1e3
