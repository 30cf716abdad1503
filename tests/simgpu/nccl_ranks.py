"""One rank of ``mpiexec -n 2 python -m mpi4py nccl_ranks.py MODE OUT``, on the simulated GPU ``rank``: builds the GPU
communicator (MODE "present": NCCL on every rank; "missing": rank 1's CuPy has no NCCL), sums and broadcasts a GPU
array with it, and writes OUT/rank<r>.json: the communicator's kind and what the arrays hold."""
import json
import logging
import sys
from pathlib import Path

from gpunet.devices import simgpu
from gpunet.distributed import MpiCommunicator, gpu_communicator

logging.basicConfig(level=logging.WARNING, format="%(message)s")
mpi = MpiCommunicator()
cupy = simgpu.make_cupy(nccl=not (sys.argv[1] == "missing" and mpi.rank == 1))
comm = gpu_communicator(mpi, mpi.rank, cupy)
with cupy.cuda.Device(mpi.rank):
    summed = cupy.arange(4.0) * (mpi.rank + 1)
    comm.allreduce_sum(summed)
    sent = cupy.full(3, float(mpi.rank + 7), dtype=cupy.float32)
    comm.broadcast(sent, root=1)
    result = {"rank": mpi.rank, "kind": type(comm).__name__, "summed": summed.get().tolist(),
              "sent": sent.get().tolist(), "gpus": [summed.device.id, sent.device.id]}
Path(sys.argv[2], f"rank{mpi.rank}.json").write_text(json.dumps(result))
