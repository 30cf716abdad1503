#!/usr/bin/env python3
"""Print ptxas' resource report for every gpunet kernel: registers, shared memory, spills, and the occupancy the
launch rule's block size allows.   python scripts/kernel_report.py [--arch sm_90] [--dtype float32]"""
import argparse
import sys

from gpunet.cuda.resources import block_size, occupancy, parse_ptxas_log
from gpunet.cuda.source import DTYPES, modules
from gpunet.cuda.plans import SHARED_MEMORY_LIMIT
from gpunet.cuda.nvrtc import ARCHITECTURES, VOLTA, Nvrtc, compile_module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="sm_90", choices=[*ARCHITECTURES, VOLTA])
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: all")
    args = parser.parse_args()
    nvrtc = Nvrtc(12 if args.arch == VOLTA else None)
    print(f"NVRTC {nvrtc.version[0]}.{nvrtc.version[1]} ({nvrtc.path}), {args.arch}")
    print(f"{'module':14} {'dtype':8} {'kernel':36} {'regs':>5} {'smem':>6} {'spill':>6} {'block':>5} {'occupancy':>9}")
    worst_spill = 0
    for module in modules():
        for dtype in ([args.dtype] if args.dtype else DTYPES):
            result = compile_module(module, DTYPES[dtype], args.arch, nvrtc, verbose=True)
            if not result.ok:
                print(result.log)
                return 1
            for name, res in sorted(parse_ptxas_log(result.log).items()):
                threads = block_size(name)
                # the smem variants take up to the launch rule's limit of dynamic shared memory
                dynamic = SHARED_MEMORY_LIMIT if name.endswith("_smem") else 0
                occ = occupancy(args.arch, res.registers, threads, res.static_shared + dynamic)
                spill = res.spill_stores + res.spill_loads
                worst_spill = max(worst_spill, spill)
                print(f"{module:14} {dtype:8} {name:36} {res.registers:5d} {res.static_shared:6d} {spill:6d} "
                      f"{threads:5d} {occ:9.0%}")
    print("no register spills" if worst_spill == 0 else f"SPILLS: up to {worst_spill} bytes")
    return 0 if worst_spill == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
