"""Compiled CPU kernels: the softmax family's row ops (softmax and log-softmax forward and backward, the fused
cross-entropy: ``rows.cpp``), the optimizers' updates (``updates.cpp``) and ReLU (``activations.cpp``), threaded
by ``row_pool.h``. Built on
first use by the machine's C++ compiler against glibc's vector math library and cached (``gpunet.native``), once
per instruction set asked for; where that cannot be done (no compiler, no libmvec, not Linux) or with
``GPUNET_CPU_KERNELS=0``, the ops and optimizers use their NumPy form, which gives the same results within
rounding.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import weakref
from pathlib import Path

from .. import native

SOURCE = Path(__file__).with_name("library.cpp")  # includes the others: every .cpp and .h here goes in the digest
PARTS = sorted(p for p in SOURCE.parent.iterdir() if p.suffix in (".cpp", ".h"))
_log = logging.getLogger("gpunet")
_state: dict = {}
_blocks: dict = {}

_P, _I64 = ctypes.c_void_p, ctypes.c_int64
_INT, _D = ctypes.c_int, ctypes.c_double
_SIGNATURES = {"softmax_rows": [_P, _P, _I64, _I64, _INT, _INT],
               "softmax_backward_rows": [_P, _P, _P, _I64, _I64, _INT, _INT],
               "cross_entropy_rows": [_P, _P, _P, _P, _P, _I64, _I64, _I64, _INT],
               "cross_entropy_reduced": [_P, _P, _P, _I64, _I64, _I64, _INT, _INT, _P],
               "sgd_update": [_P, _P, _P, _P, _I64, _D, _D, _INT, _D, _INT],
               "adam_update": [_P, _P, _P, _P, _P, _I64, _D, _D, _D, _D, _D, _INT, _D, _D, _INT],
               "relu_forward": [_P, _P, _I64, _INT],
               "relu_backward": [_P, _P, _P, _I64, _INT]}
_RESULTS = {"cross_entropy_reduced": _I64}  # the others return nothing
_SUFFIX = {"float32": "f32", "float64": "f64"}


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


# Instruction sets the kernels are built for, best first: the flags they add, and the CPU flags they need.
ISA_FLAGS = {"avx512": (["-mavx2", "-mfma", "-mavx512f"], {"avx2", "fma", "avx512f"}),
             "avx2": (["-mavx2", "-mfma"], {"avx2", "fma"}),
             "generic": ([], set())}


@functools.cache
def supported_isas() -> tuple[str, ...]:
    """The instruction sets this CPU runs, best first ("generic": whatever the compiler targets by default)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ("generic",)
    flags = _cpu_flags()
    return tuple(isa for isa, (_, needs) in ISA_FLAGS.items() if needs <= flags)


def chosen_isa() -> str:
    """``GPUNET_CPU_ISA`` if set (tests build each one; a name this CPU lacks is an error), else the best."""
    wanted = os.environ.get("GPUNET_CPU_ISA")
    available = supported_isas()
    if wanted is None:
        return available[0]
    if wanted not in available:
        raise ValueError(f"GPUNET_CPU_ISA={wanted!r}: this CPU runs {available}")
    return wanted


def compile_flags(isa: str) -> list[str]:
    """float32 rows use vector_f32.h's explicit vectors under "avx512" (16 lanes) and "avx2" (8 lanes)."""
    return ["-std=c++20", "-O3", "-fPIC", "-shared", "-pthread", "-fopenmp-simd", "-fno-math-errno", "-w",
            f"-I{SOURCE.parent}", *ISA_FLAGS[isa][0]]


def _load(isa: str):
    if platform.system() != "Linux":
        raise native.BuildError("the CPU row kernels use glibc's libmvec, on Linux only")
    cxx = native.compiler("gpunet's CPU row kernels")
    text = SOURCE.read_text()
    flags = compile_flags(isa)
    digest = native.digest_of(*(p.name + p.read_text() for p in PARTS), " ".join(flags), cxx)
    target = native.cache_dir("cpu") / f"rows-{isa}-{digest}.so"
    lib = ctypes.CDLL(str(native.build_shared(target, text, flags, cxx, "the CPU row kernels", libs=("-lmvec",))))
    for name, argtypes in _SIGNATURES.items():
        for suffix in _SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, _RESULTS.get(name)
    return lib


def library():
    """The compiled kernels, or None: switched off, or they could not be built (said once in the log)."""
    if os.environ.get("GPUNET_CPU_KERNELS", "1") == "0":
        return None
    isa = chosen_isa()
    if isa not in _state:
        try:
            _state[isa] = _load(isa)
        except (native.BuildError, OSError) as exc:
            _log.warning("gpunet: CPU row kernels unavailable, using NumPy for softmax, cross-entropy and the "
                         "optimizers (%s)",
                         str(exc).splitlines()[0])
            _state[isa] = None
    return _state[isa]


def _function(name: str, dtype):
    lib = library()
    suffix = _SUFFIX.get(dtype.name)
    return None if lib is None or suffix is None else getattr(lib, f"{name}_{suffix}")


def softmax_block(dtype, threads: int, log: bool):
    """``run(x, y)`` for C-contiguous (rows, C) arrays of ``dtype``, rows split over up to ``threads`` threads,
    or None."""
    fn = _function("softmax_rows", dtype)
    if fn is None:
        return None

    def run(x, y):
        fn(x.ctypes.data, y.ctypes.data, x.shape[0], x.shape[1], int(log), threads)
    return run


def softmax_backward_block(dtype, threads: int, log: bool):
    """``run(y, dy, dx)`` (``y`` the forward output: log-probabilities when ``log``), or None."""
    fn = _function("softmax_backward_rows", dtype)
    if fn is None:
        return None

    def run(y, dy, dx):
        fn(y.ctypes.data, dy.ctypes.data, dx.ctypes.data, y.shape[0], y.shape[1], int(log), threads)
    return run


def cross_entropy_block(dtype, threads: int, ignore_index: int):
    """``run(x, labels, row_scale, loss, grad)``: loss rows and the scaled gradient (labels int64), or None."""
    fn = _function("cross_entropy_rows", dtype)
    if fn is None:
        return None

    def run(x, labels, row_scale, loss, grad):
        fn(x.ctypes.data, labels.ctypes.data, row_scale.ctypes.data, loss.ctypes.data, grad.ctypes.data,
           x.shape[0], x.shape[1], ignore_index, threads)
    return run


def cross_entropy_reduced_block(dtype, threads: int, ignore_index: int, mean: bool):
    """``run(x, labels, grad) -> (bad_row, loss)``: reduction "mean" (``mean``) or "sum" of the loss, and the
    gradient for ``dloss = 1`` written into ``grad``, in one call that also checks the labels (int64): ``bad_row``
    is the first row whose label is out of range (nothing is then written), -1 when there is none; or None."""
    fn = _function("cross_entropy_reduced", dtype)
    if fn is None:
        return None

    def run(x, labels, grad):
        loss = ctypes.c_double()  # one per call: callers on several threads share this function
        bad_row = fn(x.ctypes.data, labels.ctypes.data, grad.ctypes.data, x.shape[0], x.shape[1], ignore_index,
                     int(mean), threads, ctypes.byref(loss))
        return bad_row, loss.value
    return run


class _TensorLists:
    """ctypes arrays of the data pointers of each list of tensors (a list may be None: a null pointer), and of
    their sizes; each tensor's partners must be C-contiguous, of its dtype and size. An optimizer passes the same
    arrays at every step: the last lists' pointers are kept, with weak references to their arrays, and given back
    while every array is the same live object (the pointers are then still its data), which costs a few
    microseconds instead of 40."""

    def __init__(self):
        self.arrays, self.shape, self.args = (), None, None

    def __call__(self, *lists):
        arrays = tuple(a for lst in lists if lst is not None for a in lst)
        shape = tuple(None if lst is None else len(lst) for lst in lists)
        if (shape == self.shape and len(arrays) == len(self.arrays)
                and all(ref() is a for ref, a in zip(self.arrays, arrays))):
            return self.args
        first = lists[0]
        for group in zip(*(lst for lst in lists if lst is not None)):
            for a in group:
                if not a.flags.c_contiguous or a.dtype != group[0].dtype or a.size != group[0].size:
                    raise ValueError("the compiled updates need C-contiguous arrays of one dtype and size")
        pointers = [None if lst is None else (ctypes.c_void_p * len(lst))(*(a.ctypes.data for a in lst))
                    for lst in lists]
        self.arrays, self.shape = tuple(weakref.ref(a) for a in arrays), shape
        self.args = pointers + [(ctypes.c_int64 * len(first))(*(a.size for a in first)), len(first)]
        return self.args


def sgd_update_block(dtype, threads: int):
    """``run(ws, grads, velocities_or_None, lr, momentum, nesterov, weight_decay)``: every tensor of the lists,
    in place, in one call; or None."""
    fn = _function("sgd_update", dtype)
    if fn is None:
        return None

    tensor_lists = _TensorLists()

    def run(ws, grads, velocities, lr, momentum, nesterov, weight_decay):
        fn(*tensor_lists(ws, grads, velocities), lr, momentum, int(nesterov), weight_decay, threads)
    return run


def adam_update_block(dtype, threads: int):
    """``run(ws, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_bias2)``, or
    None."""
    fn = _function("adam_update", dtype)
    if fn is None:
        return None

    tensor_lists = _TensorLists()

    def run(ws, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_bias2):
        fn(*tensor_lists(ws, grads, ms, vs), lr, beta1, beta2, eps, weight_decay, int(decoupled), step_size,
           inv_bias2, threads)
    return run


def relu_forward_block(dtype, threads: int):
    """``run(x, y)``: y = max(x, 0) for C-contiguous arrays of one size, or None."""
    fn = _function("relu_forward", dtype)
    if fn is None:
        return None

    def run(x, y):
        fn(x.ctypes.data, y.ctypes.data, x.size, threads)
    return run


def relu_backward_block(dtype, threads: int):
    """``run(y, dy, dx)``: dx = dy where y > 0, else 0 (dy * 0: NaN for an inf or NaN dy), or None."""
    fn = _function("relu_backward", dtype)
    if fn is None:
        return None

    def run(y, dy, dx):
        fn(y.ctypes.data, dy.ctypes.data, dx.ctypes.data, y.size, threads)
    return run


_BLOCKS = {"softmax": softmax_block, "softmax_backward": softmax_backward_block,
           "cross_entropy": cross_entropy_block, "cross_entropy_reduced": cross_entropy_reduced_block,
           "sgd_update": sgd_update_block, "adam_update": adam_update_block,
           "relu_forward": relu_forward_block, "relu_backward": relu_backward_block}


def block(op: str, dtype, threads: int = 1, **options):
    """The function that runs op ``op`` ("softmax" and "softmax_backward" with ``log``, "cross_entropy" with
    ``ignore_index``, "cross_entropy_reduced" with ``ignore_index`` and ``mean``; "sgd_update", "adam_update",
    "relu_forward", "relu_backward") over whole arrays, on up to ``threads`` threads (parts of at least 131072
    elements); None for a dtype without kernels (only float32 and float64 have them)."""
    if op not in _BLOCKS:
        raise ValueError(f"no compiled CPU kernel for {op!r}")
    # Looked up once per op and setting: ops and optimizers ask at every call, and the lookup (environment,
    # instruction set, library, symbol) cost more than updating a small tensor.
    key = (op, dtype, threads, *options.items(), os.environ.get("GPUNET_CPU_KERNELS"),
           os.environ.get("GPUNET_CPU_ISA"))
    try:
        return _blocks[key]
    except KeyError:
        import numpy  # a dtype given as a type (numpy.float32) or a name ("float32") works as well

        _blocks[key] = found = _BLOCKS[op](numpy.dtype(dtype), threads, **options)
        return found


def _reset_for_tests() -> None:
    _state.clear()
    _blocks.clear()
