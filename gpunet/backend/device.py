"""The Device: one object that answers "which array module, which kernels" for everything above it."""
from __future__ import annotations

import numpy


class Device:
    """A place where arrays live and ops run.

    ``xp`` is the array module (numpy or cupy). ``kernels`` is the runner of the hand-written CUDA kernels in
    ``kernels/`` (the real GPU or the CPU simulator), or None where ops use plain ``xp`` expressions.
    """

    name: str = "?"
    xp = numpy
    kernels = None

    def asarray(self, a, dtype=None):
        """``a`` as an array of this device (copied across devices where needed)."""
        raise NotImplementedError

    def to_numpy(self, a):
        """``a`` as a host NumPy array."""
        raise NotImplementedError

    def owns(self, a) -> bool:
        """True when ``a`` is an array of this device's kind (no copy needed)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until every launched kernel has finished (a no-op on host devices)."""

    def seed_rng(self, seed: int):
        """A random generator of this device's array module, seeded."""
        return self.xp.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"gpunet.device({self.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class HostDevice(Device):
    """Arrays are NumPy arrays in host memory."""

    def asarray(self, a, dtype=None):
        if _is_cupy_array(a):
            a = a.get()
        return numpy.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        if _is_cupy_array(a):
            return a.get()
        return numpy.asarray(a)

    def owns(self, a) -> bool:
        return isinstance(a, numpy.ndarray)


def _is_cupy_array(a) -> bool:
    return type(a).__module__.startswith("cupy")
