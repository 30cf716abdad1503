"""The Device: one object that answers "which array module, which kernels" for everything above it."""
from __future__ import annotations

import functools

import numpy

from .blas_threads import BlasThreads


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

    def compiled_block(self, op: str, dtype, **options):
        """A compiled function over whole arrays (threaded inside) for ``op`` (the names in
        ``gpunet.cpu_kernels.block``), or None where the ``xp`` form is used. Only the CPU device has them;
        devices with ``kernels`` run their own."""
        return None

    def matmul(self, a, b, out=None):
        """The matrix product ``a @ b`` of two 2-D arrays (into ``out`` when given), on this device's BLAS."""
        return self.xp.matmul(a, b, out=out)

    def map_rows(self, fn, inputs, outputs) -> None:
        """Run ``fn(*inputs, *outputs)`` over row blocks of arrays that share their first axis.

        The default is one call over the whole arrays (a GPU parallelises inside each op); the host device
        splits the rows into cache-sized blocks spread over its cores."""
        fn(*inputs, *outputs)

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

    block_bytes = 1 << 20  # about half of a core's L2: a block's inputs and outputs stay in cache
    _blas_threads = BlasThreads()  # one per process: the BLAS's thread count is process-wide

    def matmul(self, a, b, out=None):
        return self._blas_threads.matmul(numpy.matmul, a, b, out=out)

    def map_rows(self, fn, inputs, outputs) -> None:
        """Row blocks of about ``block_bytes`` on a thread per core (NumPy releases the GIL inside ufuncs), so
        each op's passes over a block hit the cache instead of memory, and both cores work. The calling thread
        runs the first block itself rather than waiting idle."""
        rows = inputs[0].shape[0]
        row_bytes = max(1, inputs[0].nbytes // max(rows, 1))
        block = max(1, self.block_bytes // row_bytes)
        if rows <= block:
            fn(*inputs, *outputs)
            return

        def run(start):
            fn(*(a[start:start + block] for a in inputs), *(a[start:start + block] for a in outputs))
        pending = [_host_pool().submit(run, start) for start in range(block, rows, block)]
        run(0)
        for part in pending:
            part.result()

    def asarray(self, a, dtype=None):
        if type(a) is numpy.ndarray and dtype is None:  # the common case, first: ops call this on every input
            return a
        if _is_cupy_array(a):
            a = a.get()
        return numpy.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        if _is_cupy_array(a):
            return a.get()
        return numpy.asarray(a)

    def owns(self, a) -> bool:
        return isinstance(a, numpy.ndarray)


_POOL = None


@functools.cache
def host_threads() -> int:
    """Threads host work is split over: one per core this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _host_pool():
    global _POOL
    if _POOL is None:
        import concurrent.futures

        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=host_threads(), thread_name_prefix="gpunet-host")
    return _POOL


def _is_cupy_array(a) -> bool:
    return type(a).__module__.startswith("cupy")
