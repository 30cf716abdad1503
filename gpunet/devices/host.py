"""Host memory: what the CPU and the simulator share (NumPy arrays, the host BLAS, a thread per core)."""
from __future__ import annotations

import concurrent.futures
import functools
import os

import numpy

from .base import Device, is_cupy_array
from .blas import HostBlas


@functools.cache
def host_threads() -> int:
    """Threads host work is split over: ``$GPUNET_THREADS`` (set per rank by ``gpunet train --nproc``), else one
    per core this process may run on."""
    if os.environ.get("GPUNET_THREADS", "").isdigit() and int(os.environ["GPUNET_THREADS"]) > 0:
        return int(os.environ["GPUNET_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def host_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=host_threads(), thread_name_prefix="gpunet-host")


@functools.cache
def host_blas() -> HostBlas:
    """The one per process (the BLASes' thread counts are process-wide): NumPy's or oneMKL by measurement."""
    return HostBlas(host_threads())


class HostDevice(Device):
    """Arrays are NumPy arrays in host memory."""

    def matmul(self, a, b, out=None):
        return host_blas().matmul(a, b, out=out)

    def asarray(self, a, dtype=None):
        if type(a) is numpy.ndarray and dtype is None:  # the common case, first: ops call this on every input
            return a
        if is_cupy_array(a):
            a = a.get()
        return numpy.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        if is_cupy_array(a):
            return a.get()
        return numpy.asarray(a)

    def owns(self, a) -> bool:
        return isinstance(a, numpy.ndarray) and not is_cupy_array(a)

    def describe(self) -> dict:
        setting, current = host_blas().choice()
        return {**super().describe(), "host_threads": host_threads(), "blas": current, "blas_setting": setting}
