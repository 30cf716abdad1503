"""Data-parallel training over MPI ranks (CPU and simulator ranks reduce through MPI, GPU ranks through NCCL).

``mpiexec -n 4 python -m mpi4py -m gpunet train --distributed ...`` on any MPI, or ``gpunet train --nproc 4`` on
one machine. N ranks train the model one process would, on the same global batches: docs/distributed.md.
"""
from .communicator import (Communicator, DistributedUnavailable, MpiCommunicator, NcclCommunicator,
                           gpu_communicator, world)
from .data_parallel import DataParallel, FlatBuffers, split
from .launch import mpiexec, rank_environment
from .placement import rank_device

__all__ = ["Communicator", "MpiCommunicator", "NcclCommunicator", "DistributedUnavailable", "world",
           "gpu_communicator", "DataParallel", "FlatBuffers", "split", "rank_device", "mpiexec", "rank_environment"]
