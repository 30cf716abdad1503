"""The Device: one object that answers "which array module, and how does an op run here" for everything above it."""
from __future__ import annotations

import contextlib

import numpy


def is_cupy_array(a) -> bool:
    """A GPU array: CuPy's, or the simulated GPU's (``gpunet.devices.simgpu``), which says so."""
    return type(a).__module__.startswith("cupy") or getattr(type(a), "__gpunet_gpu_array__", False)


class Device:
    """A place where arrays live and ops run.

    ``xp`` is the array module (numpy or cupy). ``kernels`` is what runs ops here (a ``gpunet.kinds.Kernels``):
    CUDA kernels on ``cuda`` and ``sim``, compiled or NumPy forms on ``cpu``. ``run(op, ...)`` hands ``op`` to it.
    """

    name: str = "?"
    xp = numpy
    kernels = None  # a gpunet.kinds.Kernels, set by each device

    def run(self, op, *args, **params):
        """Run ``op`` here: ``op.run(self.kernels, ...)``, which calls the kernels' method of ``op``'s kind with
        the arguments that kind declares (``gpunet.kinds``)."""
        return op.run(self.kernels, *args, **params)

    def asarray(self, a, dtype=None):
        """``a`` as an array of this device (copied across devices where needed)."""
        raise NotImplementedError

    def to_numpy(self, a):
        """``a`` as a host NumPy array."""
        raise NotImplementedError

    def owns(self, a) -> bool:
        """True when ``a`` is an array of this device's kind (no copy needed)."""
        raise NotImplementedError

    def context(self):
        """A context in which this device is the one array operators run on (its GPU current; nothing on the
        host): ops run their work inside it."""
        return contextlib.nullcontext()

    def make_current(self) -> None:
        """Make this device the one that array operators of this thread run on (a GPU's; nothing on the host)."""

    def synchronize(self) -> None:
        """Wait until every launched kernel has finished (a no-op on host devices)."""

    def matmul(self, a, b, out=None):
        """The matrix product ``a @ b`` of two 2-D arrays (into ``out`` when given), on this device's BLAS."""
        return self.xp.matmul(a, b, out=out)

    @property
    def kernel_launches(self) -> int | None:
        """How many of gpunet's CUDA kernels this device has launched so far (``sim``, ``cuda``): the difference
        around a call counts its launches, a step's host cost on a GPU. None where ops are not launched kernels
        (``cpu``)."""
        return None

    def describe(self) -> dict:
        """What a run's record should say of this device (``metrics.json``): its name, and what else decides its
        speed (the host BLAS chosen, the GPU's model)."""
        return {"name": self.name}

    def seed_rng(self, seed: int):
        """A random generator of this device's array module, seeded."""
        return self.xp.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"gpunet.device({self.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)
