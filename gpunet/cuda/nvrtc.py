"""A ctypes binding of NVRTC, the compiler CuPy uses, to build kernels without a GPU or a CUDA install.

Finds ``libnvrtc`` in the pip packages ``nvidia-cuda-nvrtc`` (CUDA 13) or ``nvidia-cuda-nvrtc-cu12`` (CUDA 12,
the last to target sm_70), then in a system CUDA. ``compile_module`` returns the cubin (or, for a ``compute_XY``
architecture, the PTX) and NVRTC's log, which carries ptxas' resource report (registers, shared memory, spills)
when asked for with ``verbose``.

Why ctypes and not NVIDIA's ``cuda-bindings``: its NVRTC module compiles without a GPU (checked with 13.5.0), but
one environment holds one ``cuda-bindings`` major, bound to one NVRTC major, and the suite needs NVRTC 13 (sm_75
and up) and NVRTC 12 (sm_70, which 13 dropped) side by side; the six NVRTC calls used here are stable C API.
"""
from __future__ import annotations

import ctypes
import dataclasses
import glob
import os
import sys
from pathlib import Path

from .source import DtypeConfig, kernel_dir, read_source

ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
VOLTA = "sm_70"


class NvrtcError(RuntimeError):
    pass


def _candidates(major: int | None):
    roots = [Path(p) for p in sys.path if p and os.path.isdir(p)]
    patterns = {13: ["nvidia/cu13/lib/libnvrtc.so.13*"], 12: ["nvidia/cuda_nvrtc/lib/libnvrtc.so.12*",
                                                               "nvidia/cu12/lib/libnvrtc.so.12*"]}
    majors = [major] if major else [13, 12]
    for m in majors:
        for root in roots:
            for pattern in patterns[m]:
                yield from sorted(glob.glob(str(root / pattern)))
        for cuda in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
            yield from sorted(glob.glob(f"{cuda}/libnvrtc.so.{m}*"))


class Nvrtc:
    def __init__(self, major: int | None = None):
        self.lib = None
        for path in _candidates(major):
            if "builtins" in path:
                continue
            try:
                self.lib = ctypes.CDLL(path)
                self.path = path
                break
            except OSError:
                continue
        if self.lib is None:
            raise NvrtcError(f"libnvrtc{'.so.' + str(major) if major else ''} not found: "
                             "pip install nvidia-cuda-nvrtc (CUDA 13) or nvidia-cuda-nvrtc-cu12")
        lib = self.lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major_v, minor_v = ctypes.c_int(), ctypes.c_int()
        lib.nvrtcVersion(ctypes.byref(major_v), ctypes.byref(minor_v))
        self.version = (major_v.value, minor_v.value)

    def supported_archs(self) -> tuple[str, ...]:
        """The ``sm_XY`` architectures this NVRTC compiles for (NVRTC 13 has dropped sm_70, for one)."""
        count = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * count.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        return tuple(f"sm_{a}" for a in archs)

    def _check(self, status, what):
        if status != 0:
            raise NvrtcError(f"{what}: {self.lib.nvrtcGetErrorString(status).decode()}")

    def compile(self, source: str, name: str, options: list[str]):
        """Return ``(ok, log, image)``: the cubin, or the PTX (NUL-terminated text) where the options name a
        virtual architecture (``--gpu-architecture=compute_XY``), for the driver to compile."""
        lib = self.lib
        prog = ctypes.c_void_p()
        self._check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
                    "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            status = lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            log_text = log.value.decode(errors="replace")
            if status != 0:
                return False, log_text, b""
            get_size, get = ((lib.nvrtcGetPTXSize, lib.nvrtcGetPTX) if wants_ptx(options)
                             else (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN))
            self._check(get_size(prog, ctypes.byref(size)), get_size.__name__)
            image = ctypes.create_string_buffer(size.value)
            self._check(get(prog, image), get.__name__)
            return True, log_text, image.raw
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


@dataclasses.dataclass
class CompileResult:
    module: str
    dtype: str
    arch: str
    ok: bool
    log: str
    cubin: bytes

    @property
    def spills(self) -> list[str]:
        return [line for line in self.log.splitlines() if "spill" in line.lower() and " 0 bytes spill" not in line
                and "0 bytes spill stores, 0 bytes spill loads" not in line]


def wants_ptx(options: list[str]) -> bool:
    return any(o.startswith("--gpu-architecture=compute_") for o in options)


# The floating-point semantics of docs/semantics.md, spelled out rather than left to NVRTC's defaults: subnormals
# kept (no flush to zero), IEEE division and square root, and no contraction of a*b+c into an FMA, as in the
# simulator (g++ -ffp-contract=off, gpunet/cuda/sim_build.py) and the CPU.
FLOAT_SEMANTICS = ("--ftz=false", "--prec-div=true", "--prec-sqrt=true", "--fmad=false")


def compile_options(config: DtypeConfig, arch: str, verbose: bool = False) -> list[str]:
    """The one list of NVRTC options: the NVRTC tests and the ``cuda`` device (``cubin_cache.module_image``) both
    compile with exactly this. ``arch``: ``sm_XY`` for a cubin, ``compute_XY`` for PTX."""
    options = [f"--gpu-architecture={arch}", f"--include-path={kernel_dir()}", "--std=c++17",
               "--ptxas-options=--warn-on-spills", *FLOAT_SEMANTICS, *config.compile_defines()]
    if config.defines:  # cuda_fp16.h ships with the nvrtc wheel's CUDA headers
        options += [f"--include-path={p}" for p in cuda_include_dirs()]
    if verbose:
        options.append("--ptxas-options=-v")
    return options


def cuda_include_dirs(host_compilable: bool = False) -> list[str]:
    """The folders holding CUDA's ``cuda_fp16.h`` and what it includes. NVRTC needs only the header (it has the
    rest built in); the simulator's host compiler also needs ``crt/host_defines.h`` and CCCL's ``nv/target``
    (a CUDA 13 toolkit keeps those under ``include/cccl``). The pip wheels ``nvidia-cuda-runtime``,
    ``nvidia-cuda-crt`` and ``nvidia-cuda-cccl`` install all three under ``nvidia/cu13/include``; a toolkit
    (``$CUDA_HOME``, ``/usr/local/cuda``) is the fallback."""
    candidates = [os.path.join(root, sub) for root in sys.path if root
                  for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cuda_nvrtc/include")]
    candidates += ["/usr/local/cuda/include"]
    if os.environ.get("CUDA_HOME"):
        candidates.insert(0, os.path.join(os.environ["CUDA_HOME"], "include"))
    for folder in candidates:
        if not os.path.isfile(os.path.join(folder, "cuda_fp16.h")):
            continue
        found = [folder] + [os.path.join(folder, "cccl")] * os.path.isdir(os.path.join(folder, "cccl"))
        if not host_compilable:
            return found
        if os.path.isfile(os.path.join(folder, "crt", "host_defines.h")) and any(
                os.path.isfile(os.path.join(d, "nv", "target")) for d in found):
            return found
    return []


def compile_module(module: str, config: DtypeConfig, arch: str, nvrtc: Nvrtc | None = None,
                   verbose: bool = False) -> CompileResult:
    nvrtc = nvrtc or Nvrtc()
    ok, log, cubin = nvrtc.compile(read_source(module), f"{module}.cu", compile_options(config, arch, verbose))
    return CompileResult(module, config.name, arch, ok, log, cubin)
