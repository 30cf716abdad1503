"""oneMKL's matrix product (``cblas_sgemm``/``cblas_dgemm`` of ``libmkl_rt``), where the ``mkl`` wheel is installed
(``pip install gpunet[mkl]``), behind a binding that checks every buffer before the call.

Why: on some CPUs (Intel's, measured on a Xeon with AVX-512) oneMKL's products run faster than NumPy's OpenBLAS
on a training step's shapes. ``gpunet.devices.blas`` decides by measurement which of the two runs each product.
A transposed view (``x.T``) goes in as stored, with the transpose flag: nothing is copied.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import os
import platform
import subprocess
import sys

import numpy

_log = logging.getLogger("gpunet")

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
INT32_MAX = 2**31 - 1  # libmkl_rt's default interface (LP64) takes 32-bit sizes
# Conditional numerical reproducibility: the same bits on every run on one CPU, whatever the arrays' alignment
# (AUTO: the CPU's best code path; STRICT: independent of alignment).
MKL_CBWR_AUTO, MKL_CBWR_STRICT = 2, 0x10000

# Loads the library and runs a 2 x 2 product, in a process of its own: a broken install makes oneMKL print a
# fatal error and end the process that loaded it, which must not be the user's.
_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
a = (ctypes.c_float * 4)(1, 2, 3, 4); c = (ctypes.c_float * 4)()
lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                            ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
lib.cblas_sgemm(101, 111, 111, 2, 2, 2, 1.0, a, 2, a, 2, 0.0, c, 2)
sys.exit(0 if list(c) == [7.0, 10.0, 15.0, 22.0] else 3)
"""


class MklUnavailable(RuntimeError):
    pass


def _candidates() -> list[str]:
    """Where ``libmkl_rt`` may be: ``$GPUNET_MKL`` if set, else the environment's lib folder (the wheel's place),
    else the system's library path."""
    if os.environ.get("GPUNET_MKL"):
        return [os.environ["GPUNET_MKL"]]
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")), reverse=True)
    system = ctypes.util.find_library("mkl_rt")
    return found + ([system] if system else [])


class Mkl:
    """The loaded library: ``gemm(a, b, out)`` and its version."""

    def __init__(self, path: str, threads: int):
        self.path = path
        self._lib = lib = ctypes.CDLL(path)
        size, ptr, int_ = ctypes.c_int, ctypes.c_void_p, ctypes.c_int
        self._gemm = {}
        for dtype, name, scalar in ((numpy.float32, "cblas_sgemm", ctypes.c_float),
                                    (numpy.float64, "cblas_dgemm", ctypes.c_double)):
            fn = getattr(lib, name)
            fn.restype = None
            fn.argtypes = [int_, int_, int_, size, size, size, scalar, ptr, size, ptr, size, scalar, ptr, size]
            self._gemm[numpy.dtype(dtype)] = fn
        lib.MKL_CBWR_Set.argtypes = [ctypes.c_int]
        if lib.MKL_CBWR_Set(MKL_CBWR_AUTO | MKL_CBWR_STRICT) != 0:
            lib.MKL_CBWR_Set(MKL_CBWR_AUTO)
        lib.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads(threads)
        lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
        self.threads = threads
        warm = numpy.ones((64, 64), numpy.float32)  # the library's first call sets it up: not in a measurement
        self.gemm(warm, warm)
        text = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.MKL_Get_Version_String(text, len(text))
        self.version = text.value.decode(errors="replace").strip()

    def supports(self, a, b) -> bool:
        """True when ``gemm`` takes these operands (two 2-D arrays of float32 or float64, native byte order, each
        stored row- or column-major, sizes that fit 32 bits); else the caller uses NumPy."""
        return (a.dtype in self._gemm and b.dtype == a.dtype and a.ndim == 2 and b.ndim == 2
                and a.dtype.isnative and _layout(a) is not None and _layout(b) is not None
                and 0 < max(a.shape + b.shape) <= INT32_MAX and min(a.shape + b.shape) > 0)

    def writes(self, out, a, b) -> bool:
        """True when ``gemm`` can write ``a @ b`` into ``out`` (else NumPy, which also casts, should)."""
        return (type(out) is numpy.ndarray and out.dtype == a.dtype and out.shape == (a.shape[0], b.shape[1])
                and out.flags.c_contiguous and out.flags.writeable and not numpy.may_share_memory(out, a)
                and not numpy.may_share_memory(out, b))

    def gemm(self, a, b, out=None, threads: int = 0):
        """``a @ b`` into ``out`` (C-contiguous, writable, of shape (M, N) and the inputs' dtype, sharing no
        memory with them), or a new array; on ``threads`` threads (0: the library's count)."""
        if not self.supports(a, b):
            raise TypeError(f"MKL gemm takes two non-empty 2-D float32 or float64 arrays of one dtype, each "
                            f"contiguous in either order; got {a.dtype}{tuple(a.shape)} and {b.dtype}{tuple(b.shape)}")
        m, k = a.shape
        if b.shape[0] != k:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not chain")
        n = b.shape[1]
        if out is None:
            out = numpy.empty((m, n), dtype=a.dtype)
        elif (type(out) is not numpy.ndarray or out.dtype != a.dtype or out.shape != (m, n)
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"MKL gemm writes a C-contiguous, writable {a.dtype} array of shape {(m, n)}; got "
                             f"{getattr(out, 'dtype', type(out).__name__)}{tuple(getattr(out, 'shape', ()))}")
        elif numpy.may_share_memory(out, a) or numpy.may_share_memory(out, b):
            raise ValueError("MKL gemm: out shares memory with an input")
        trans_a, ld_a = _layout(a)
        trans_b, ld_b = _layout(b)
        before = self._lib.MKL_Set_Num_Threads_Local(threads) if threads else 0  # this thread's, put back after
        try:
            self._gemm[a.dtype](ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, ld_a, b.ctypes.data,
                                ld_b, 0.0, out.ctypes.data, n)
        finally:
            if threads:
                self._lib.MKL_Set_Num_Threads_Local(before)
        return out


def _layout(m):
    """(transpose flag, leading dimension) of a 2-D array as cblas reads it row-major, or None if it is neither
    row- nor column-major in memory (a strided slice)."""
    if type(m) is not numpy.ndarray:
        return None
    rows, cols = m.shape
    if m.flags.c_contiguous:
        return NO_TRANS, max(cols, 1)
    if m.flags.f_contiguous:  # a transposed view of a row-major array: the stored matrix is m.T
        return TRANS, max(rows, 1)
    return None


def _probe(path: str) -> str | None:
    """None when ``path`` loads and multiplies in a test process, else why not."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the test process failed ({exc})"
    if done.returncode == 0:
        return None
    said = (done.stdout + done.stderr).strip().splitlines()
    return f"it failed in a test process (exit {done.returncode}{': ' + said[-1] if said else ''})"


@functools.cache
def load(threads: int) -> Mkl:
    """oneMKL with ``threads`` threads, or :class:`MklUnavailable` saying why. Each candidate library is first
    tried in a process of its own (about 0.1 s, once per process that may use oneMKL)."""
    tried = []
    for path in _candidates():
        why = _probe(path)
        if why is None:
            try:
                return Mkl(path, threads)
            except (OSError, AttributeError) as exc:
                why = str(exc)
        tried.append(f"{path}: {why}")
    if platform.machine() not in ("x86_64", "AMD64"):
        hint = f"oneMKL is built for x86-64 only, this is {platform.machine()}"
    else:
        hint = "pip install gpunet[mkl]"
    raise MklUnavailable(f"oneMKL not found ({hint})" + (f"; tried {'; '.join(tried)}" if tried else ""))
