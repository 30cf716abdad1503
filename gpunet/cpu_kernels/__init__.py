"""Compiled CPU row kernels for the softmax family (softmax and log-softmax forward and backward, the fused
cross-entropy): see ``rows.cpp``. Built on first use by the machine's C++ compiler against glibc's vector math
library and cached (``gpunet.native``); where that cannot be done (no compiler, no libmvec, not Linux) or with
``GPUNET_CPU_KERNELS=0``, the ops use their NumPy form, which gives the same results within rounding.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
from pathlib import Path

from .. import native

SOURCE = Path(__file__).with_name("rows.cpp")
_log = logging.getLogger("gpunet")
_state: dict = {}

_P, _I64 = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {"softmax_rows": [_P, _P, _I64, _I64, ctypes.c_int],
               "softmax_backward_rows": [_P, _P, _P, _I64, _I64, ctypes.c_int],
               "cross_entropy_rows": [_P, _P, _P, _P, _P, _I64, _I64, _I64]}
_SUFFIX = {"float32": "f32", "float64": "f64"}


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def compile_flags() -> list[str]:
    flags = ["-std=c++20", "-O3", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-w"]
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= _cpu_flags():
        flags += ["-mavx2", "-mfma"]  # libmvec's 8-wide expf; without them its 4-wide SSE one
    return flags


def _load():
    if platform.system() != "Linux":
        raise native.BuildError("the CPU row kernels use glibc's libmvec, on Linux only")
    cxx = native.compiler("gpunet's CPU row kernels")
    text = SOURCE.read_text()
    flags = compile_flags()
    target = native.cache_dir("cpu") / f"rows-{native.digest_of(text, ' '.join(flags), cxx)}.so"
    lib = ctypes.CDLL(str(native.build_shared(target, text, flags, cxx, "the CPU row kernels", libs=("-lmvec",))))
    for name, argtypes in _SIGNATURES.items():
        for suffix in _SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, None
    return lib


def library():
    """The compiled kernels, or None: switched off, or they could not be built (said once in the log)."""
    if os.environ.get("GPUNET_CPU_KERNELS", "1") == "0":
        return None
    if "lib" not in _state:
        try:
            _state["lib"] = _load()
        except (native.BuildError, OSError) as exc:
            _log.warning("gpunet: CPU row kernels unavailable, using NumPy for softmax and cross-entropy (%s)",
                         str(exc).splitlines()[0])
            _state["lib"] = None
    return _state["lib"]


def _function(name: str, dtype):
    lib = library()
    suffix = _SUFFIX.get(dtype.name)
    return None if lib is None or suffix is None else getattr(lib, f"{name}_{suffix}")


def softmax_block(dtype, log: bool):
    """A ``map_rows`` block function ``run(x, y)`` for C-contiguous (rows, C) arrays of ``dtype``, or None."""
    fn = _function("softmax_rows", dtype)
    if fn is None:
        return None

    def run(x, y):
        fn(x.ctypes.data, y.ctypes.data, x.shape[0], x.shape[1], int(log))
    return run


def softmax_backward_block(dtype, log: bool):
    """``run(y, dy, dx)`` (``y`` the forward output: log-probabilities when ``log``), or None."""
    fn = _function("softmax_backward_rows", dtype)
    if fn is None:
        return None

    def run(y, dy, dx):
        fn(y.ctypes.data, dy.ctypes.data, dx.ctypes.data, y.shape[0], y.shape[1], int(log))
    return run


def cross_entropy_block(dtype, ignore_index: int):
    """``run(x, labels, row_scale, loss, grad)``: loss rows and the scaled gradient (labels int64), or None."""
    fn = _function("cross_entropy_rows", dtype)
    if fn is None:
        return None

    def run(x, labels, row_scale, loss, grad):
        fn(x.ctypes.data, labels.ctypes.data, row_scale.ctypes.data, loss.ctypes.data, grad.ctypes.data,
           x.shape[0], x.shape[1], ignore_index)
    return run


def block(op: str, dtype, **options):
    """The block function of row op ``op`` ("softmax" and "softmax_backward" with ``log``, "cross_entropy" with
    ``ignore_index``)."""
    if op == "softmax":
        return softmax_block(dtype, **options)
    if op == "softmax_backward":
        return softmax_backward_block(dtype, **options)
    if op == "cross_entropy":
        return cross_entropy_block(dtype, **options)
    raise ValueError(f"no compiled CPU row kernel for {op!r}")


def _reset_for_tests() -> None:
    _state.clear()
