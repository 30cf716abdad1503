"""Compiled CPU kernels: the softmax family's row ops and the fused cross-entropy (``rows.cpp``), the optimizers'
updates (``updates.cpp``) and the activations (``activations.cpp``), threaded by ``row_pool.h``.

Built on first use by the machine's C++ compiler against glibc's vector math library and cached
(``gpunet.native``), once per instruction set; where that cannot be done (no compiler, no libmvec, not Linux) or
with ``GPUNET_CPU_KERNELS=0``, the CPU device runs each op's NumPy form, which gives the same results within
rounding. Every call goes through :mod:`gpunet.cpu_kernels.binding`, which checks it against the source's
declaration.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from pathlib import Path

from .. import native
from ..machine import cpu_flags
from .binding import Binding, signatures_of_files

SOURCE = Path(__file__).with_name("library.cpp")  # includes the others: every .cpp and .h here goes in the digest
PARTS = sorted(p for p in SOURCE.parent.iterdir() if p.suffix in (".cpp", ".h"))
_log = logging.getLogger("gpunet")
_state: dict = {}


def signatures():
    """Entry point name -> its parsed Signature, from every ``.cpp`` here."""
    return signatures_of_files(tuple(str(p) for p in PARTS if p.suffix == ".cpp"))


# Instruction sets the kernels are built for, best first: the flags they add, and the CPU flags they need.
ISA_FLAGS = {"avx512": (["-mavx2", "-mfma", "-mavx512f"], {"avx2", "fma", "avx512f"}),
             "avx2": (["-mavx2", "-mfma"], {"avx2", "fma"}),
             "generic": ([], set())}


@functools.cache
def supported_isas() -> tuple[str, ...]:
    """The instruction sets this CPU runs, best first ("generic": whatever the compiler targets by default)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ("generic",)
    flags = cpu_flags()
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


def compile_flags(isa: str, folder: Path = SOURCE.parent) -> list[str]:
    """float32 rows use vector_f32.h's explicit vectors under "avx512" (16 lanes) and "avx2" (8 lanes)."""
    return ["-std=c++20", "-O3", "-fPIC", "-shared", "-pthread", "-fopenmp-simd", "-fno-math-errno", "-w",
            f"-I{folder}", *ISA_FLAGS[isa][0]]


def build(isa: str, folder: Path = SOURCE.parent) -> Binding:
    """``folder``'s library.cpp (and what it includes) compiled for ``isa`` and bound, cached by content.
    Another folder than this package's is for tests that build the kernels with a planted bug."""
    if platform.system() != "Linux":
        raise native.BuildError("the CPU kernels use glibc's libmvec, on Linux only")
    cxx = native.compiler("gpunet's CPU kernels")
    parts = sorted(p for p in Path(folder).iterdir() if p.suffix in (".cpp", ".h"))
    flags = compile_flags(isa, folder)
    digest = native.digest_of(*(p.name + p.read_text() for p in parts), " ".join(flags), cxx)
    path = native.cached_library("cpu", f"kernels-{isa}-{digest}.so", (Path(folder) / SOURCE.name).read_text, flags,
                                 cxx, "the CPU kernels", libs=("-lmvec",))
    lib = ctypes.CDLL(str(path))
    return Binding(lib, signatures_of_files(tuple(str(p) for p in parts if p.suffix == ".cpp")))


def library() -> Binding | None:
    """The compiled kernels behind their checked binding, or None: switched off, or they could not be built
    (said once in the log)."""
    if os.environ.get("GPUNET_CPU_KERNELS", "1") == "0":
        return None
    isa = chosen_isa()
    if isa not in _state:
        try:
            _state[isa] = build(isa)
        except (native.BuildError, OSError) as exc:
            _log.warning("gpunet: compiled CPU kernels unavailable, the CPU runs every op's NumPy form (%s)",
                         str(exc).splitlines()[0])
            _state[isa] = None
    return _state[isa]


def _reset_for_tests() -> None:
    _state.clear()
