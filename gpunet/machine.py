"""What CPU this is: model, vendor and instruction-set flags, read once from ``/proc/cpuinfo``.

Why one place: the compiled kernels pick their instruction set from the flags, the BLAS choice is cached per CPU,
and ``gpunet info`` and the bench print them; all must name the machine alike.
"""
from __future__ import annotations

import functools
import platform

# The flags worth naming when saying what a CPU can do (the kernels' ISA levels, and AMX, which oneMKL uses).
NOTABLE_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
                 "amx_bf16")


@functools.cache
def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """"AMD EPYC 9R14", "Intel(R) Xeon(R) Platinum 8488C"; else what the platform module says."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """"AuthenticAMD", "GenuineIntel", or "" where unknown."""
    return _cpuinfo().get("vendor_id", "")


def cpu_flags() -> frozenset:
    return frozenset(_cpuinfo().get("flags", "").split())


def notable_flags() -> list[str]:
    flags = cpu_flags()
    return [f for f in NOTABLE_FLAGS if f in flags]
