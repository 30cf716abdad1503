"""Build a kernel module for the CPU simulator: the very same ``kernels/<module>.cu``, compiled by g++.

Steps: ``g++ -E`` the source with ``cuda_sim.h`` in front (so ``__shared__`` becomes ``static``), rewrite each
``extern __shared__ T name[];`` into a bounds-checked view of the launch's dynamic shared buffer, append one
``extern "C"`` launcher per kernel (unpacking a ``void**`` argument array by the kernel's signature), and link a
shared library. Builds are cached by a hash of every input, so a source change rebuilds and nothing else does.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .. import native
from .source import DtypeConfig, kernel_dir, read_source, signatures_of, source_digest_parts
from .nvrtc import cuda_include_dirs

SIM_DIR = Path(__file__).resolve().parent
HEADER = SIM_DIR / "cuda_sim.h"
SANITIZERS = {None: [], "address": ["-fsanitize=address", "-fno-omit-frame-pointer"], "thread": ["-fsanitize=thread"]}
# -ffp-contract=off: no a*b+c fused into an FMA, as NVRTC's --fmad=false (nvrtc.FLOAT_SEMANTICS); g++ would fuse
# wherever the target has FMA. No -ffast-math, -ffinite-math-only or flush-to-zero: subnormals, NaN and inf kept.
CXXFLAGS = ["-std=c++20", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-g0", "-w"]
_EXTERN_SHARED = re.compile(r"extern\s+static\s+([A-Za-z_][\w:\s]*?)\s+(\w+)\s*\[\s*\]\s*;")


class SimBuildError(native.BuildError):
    pass


def compiler() -> str:
    return native.compiler("the CUDA simulator", SimBuildError)


def launcher_source(source: str) -> str:
    """One ``gpunet_sim_launch_<kernel>`` per kernel: unpack ``args`` by type and run the grid."""
    out = []
    for name, params in signatures_of(source).items():
        unpack = []
        for i, p in enumerate(params):
            ctype = " ".join(t for t in p.ctype.split() if t != "__restrict__")
            unpack.append(f"    {ctype} a{i} = *reinterpret_cast<{ctype}*>(args[{i}]);")
        call = ", ".join(f"a{i}" for i in range(len(params)))
        out.append(
            f'extern "C" int gpunet_sim_launch_{name}(const unsigned* grid, const unsigned* block,\n'
            f"        unsigned long long shared_bytes, void** args, char* err, int err_len) {{\n"
            + "\n".join(unpack) + "\n"
            f"    return ::sim::launch(grid, block, shared_bytes, err, err_len, [&] {{ {name}({call}); }});\n}}\n")
    return "\n".join(out)


def rewrite_extern_shared(text: str) -> str:
    return _EXTERN_SHARED.sub(lambda m: f"::sim::SharedArray<{m.group(1).strip()}> {m.group(2)} = "
                                        f"::sim::dynamic_shared<{m.group(1).strip()}>();", text)


def _include_flags(config: DtypeConfig) -> list[str]:
    flags = [f"-I{SIM_DIR}", f"-I{kernel_dir()}"]
    if config.defines:
        dirs = cuda_include_dirs(host_compilable=True)
        if not dirs:
            raise SimBuildError(f"{config.name} in the simulator needs CUDA's cuda_fp16.h with crt/ and nv/target: "
                                "pip install nvidia-cuda-runtime nvidia-cuda-crt nvidia-cuda-cccl (the test extra), "
                                "or set CUDA_HOME to a CUDA toolkit")
        flags += [f"-I{d}" for d in dirs]
    return flags


def build_module(module: str, config: DtypeConfig, sanitize: str | None = None, source: str | None = None) -> Path:
    """Path of the simulator library for ``module`` (or for ``source``, a test's own kernels) and ``config``."""
    if sanitize not in SANITIZERS:
        raise ValueError(f"unknown sanitizer {sanitize!r}: expected 'address' or 'thread'")
    cxx = compiler()
    flags = _include_flags(config) + config.compile_defines()
    digest = native.digest_of(HEADER.read_bytes(), *source_digest_parts(), module, source or "",
                              " ".join(flags + CXXFLAGS + SANITIZERS[sanitize]), cxx)
    name = f"{module}-{config.name}-{sanitize or 'plain'}-{digest}.so"

    def text() -> str:
        unit = '#include "cuda_sim.h"\n' + (source if source is not None else f'#include "{module}.cu"\n')
        pre = subprocess.run([cxx, "-E", "-std=c++20", *flags, "-x", "c++", "-"], input=unit, capture_output=True,
                             text=True)
        if pre.returncode != 0:
            raise SimBuildError(f"preprocessing {module}.cu for the simulator failed:\n{pre.stderr}")
        return rewrite_extern_shared(pre.stdout) + "\n" + launcher_source(source or read_source(module))
    return native.cached_library("sim", name, text, CXXFLAGS + SANITIZERS[sanitize], cxx,
                                 f"{module}.cu for the simulator", SimBuildError, suffix=".ii")
