"""How many threads the host BLAS gets for one matrix product: one for a small product, all for a large one.

Why: OpenBLAS hands half of every product to its other threads, which then spin for milliseconds waiting for
the next. On a small product (the 784-100-10 network's 64 x 784 x 100) the hand-off gains little, and the
spinning thread competes with everything else a training step runs on the host, which made that network's epoch
erratic and at times half as fast. It is a trade: alone, a small product is faster on two threads, so the
policy raises the floor and costs a little of the median (the runs:
docs/measurements/cpu-amd-epyc-2core-2026-11-22-notes.md). Products of at least ``SMALL_PRODUCT`` multiply-adds
keep every thread.

The count is lowered through threadpoolctl on whatever BLAS NumPy uses (OpenBLAS, MKL, BLIS) for the one
product and put back right after, so a limit the user set stays theirs. Without threadpoolctl, or with a BLAS
it cannot control, products run as the BLAS decides. A small product's sums on one thread may differ in their
last bits from the same product on two; the choice depends only on the shape, so a run still repeats bit for bit.
"""
from __future__ import annotations

import os
import threading

import numpy

SMALL_PRODUCT = 1 << 23  # multiply-adds (m * k * n); about 0.1 ms on one core


def is_small(a, b) -> bool:
    """A product run on one thread (any BLAS: gpunet.devices.blas gives oneMKL the same policy)."""
    return a.shape[0] * a.shape[1] * b.shape[1] < SMALL_PRODUCT


class BlasThreads:
    def __init__(self):
        self._lock = threading.Lock()
        self._controllers = None  # found on first use, once NumPy has loaded its BLAS
        self._excluded: set = set()

    def exclude(self, path: str) -> None:
        """Leave the BLAS at ``path`` alone (the oneMKL gpunet loaded itself has its own thread policy)."""
        with self._lock:
            self._excluded.add(os.path.realpath(path))
            self._controllers = None

    def _find(self) -> list:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return []
        return [c for c in ThreadpoolController().select(user_api="blas").lib_controllers
                if hasattr(c, "set_num_threads") and hasattr(c, "get_num_threads")
                and os.path.realpath(getattr(c, "filepath", "")) not in self._excluded]

    def matmul(self, product, a, b, out=None):
        """``product(a, b, out=out)`` (a BLAS matrix product of 2-D arrays) on one thread if it is small."""
        if not is_small(a, b):
            return product(a, b, out=out)
        if self._controllers is None:
            with self._lock:
                if self._controllers is None:
                    self._controllers = self._find()
        lowered = []
        try:
            for controller in self._controllers:
                threads = controller.get_num_threads()
                if threads is not None and threads > 1:
                    controller.set_num_threads(1)
                    lowered.append((controller, threads))
            return product(a, b, out=out)
        finally:
            for controller, threads in lowered:
                controller.set_num_threads(threads)


def run_on(name: str, numpy_threads: BlasThreads, mkl, a, b, out):
    """``a @ b`` into ``out`` on the BLAS ``name`` ("numpy", or "mkl": the loaded ``mkl.Mkl``), small products
    on one thread on either (a training process and a timing process run products alike)."""
    if name == "mkl":
        return mkl.gemm(a, b, out, threads=1 if is_small(a, b) else 0)
    return numpy_threads.matmul(numpy.matmul, a, b, out=out)
