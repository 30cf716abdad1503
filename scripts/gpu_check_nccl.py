#!/usr/bin/env python3
"""The GPU check's NCCL step: one MPI rank builds the GPU communicator gpunet trains with (NCCL where CuPy has it,
chosen collectively) and sums and broadcasts a GPU array of each dtype on the compute stream. One rank is all a
one-GPU machine gives: it proves that NCCL loads, makes a communicator on the device, takes gpunet's dtypes and
the stream, and leaves the arrays where and as they were (a sum over one rank is the array itself).

    mpiexec -n 1 python -m mpi4py scripts/gpu_check_nccl.py --device cuda

Exit status 1 where the communicator is not NCCL (the log line says why) or an array changed or moved.
"""
import argparse
import logging
import sys

import numpy as np

import gpunet
from gpunet.distributed import MpiCommunicator, NcclCommunicator, gpu_communicator

SIZE = 1 << 20  # elements: a flat gradient buffer's order of size, not a toy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dev = gpunet.device(args.device)
    dev.make_current()
    mpi = MpiCommunicator()
    comm = gpu_communicator(mpi, dev.index, dev.cupy)
    print(f"rank {mpi.rank} of {mpi.size} on {dev.name}: {comm.name}")
    if not isinstance(comm, NcclCommunicator):
        print("FAILED: the GPU communicator fell back to MPI (the line above says why)")
        return 1
    failed = []
    for dtype in ("float16", "float32", "float64"):
        want = (np.arange(SIZE) % 1000 - 500).astype(dtype) / 8
        summed, sent = dev.asarray(want), dev.asarray(want[::-1].copy())
        comm.allreduce_sum(summed)
        comm.broadcast(sent, root=0)
        dev.synchronize()
        ok = (np.array_equal(dev.to_numpy(summed), want) and np.array_equal(dev.to_numpy(sent), want[::-1])
              and dev.owns(summed) and dev.owns(sent))
        print(f"{dtype:8} allreduce_sum and broadcast of {SIZE} elements: {'ok' if ok else 'WRONG'}")
        if not ok:
            failed.append(dtype)
    print(f"nccl: {comm.name}, {'every dtype ok' if not failed else 'wrong in ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
