"""ptxas' resource report of every kernel (registers, shared memory, spills) and the occupancy it allows.

Used by ``scripts/kernel_report.py`` and the NVRTC tests. Occupancy follows the CUDA occupancy calculator:
registers are allocated per warp in units of 256, shared memory per block, and an SM holds at most
``max_warps`` warps and ``max_blocks`` blocks.
"""
from __future__ import annotations

import dataclasses
import re

from .plans import ELEMENTWISE_BLOCK, ROW_BLOCK, WARP_BLOCK

# Per-SM limits: registers, warps, blocks, shared memory (bytes).
SM_LIMITS = {
    "sm_70": (65536, 64, 32, 96 * 1024), "sm_75": (65536, 32, 16, 64 * 1024),
    "sm_80": (65536, 64, 32, 164 * 1024), "sm_86": (65536, 48, 16, 100 * 1024),
    "sm_89": (65536, 48, 24, 100 * 1024), "sm_90": (65536, 64, 32, 228 * 1024),
}


@dataclasses.dataclass
class KernelResources:
    name: str
    registers: int = 0
    static_shared: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0


def parse_ptxas_log(log: str) -> dict[str, KernelResources]:
    kernels: dict[str, KernelResources] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Function properties for (\w+)", line) or re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = kernels.setdefault(m.group(1), KernelResources(m.group(1)))
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current.registers = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current.static_shared = int(s.group(1)) if s else 0
    return kernels


def block_size(kernel: str) -> int:
    """The block size the launch rule uses for ``kernel``."""
    if "_warp" in kernel:
        return WARP_BLOCK
    if kernel.endswith("_smem") or kernel.endswith("_plain"):
        return ROW_BLOCK
    return ELEMENTWISE_BLOCK


def occupancy(arch: str, registers: int, threads: int, shared_bytes: int) -> float:
    """Fraction of the SM's warp slots that resident blocks of this kernel can fill."""
    max_regs, max_warps, max_blocks, max_shared = SM_LIMITS[arch]
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = max_regs // (regs_per_warp * warps)
    by_warps = max_warps // warps
    by_shared = max_shared // shared_bytes if shared_bytes else max_blocks
    blocks = min(by_regs, by_warps, by_shared, max_blocks)
    return blocks * warps / max_warps
