"""Which device a rank trains on: its node-local rank modulo the node's GPU count, chosen before NCCL starts, and
made the rank's current GPU (array operators run on the current GPU)."""
from __future__ import annotations

import logging

from ..devices import CudaUnavailable, device, probe_cuda
from ..devices.simgpu import cupy as simulated_cupy
from .communicator import Communicator, gpu_communicator

GPU_KINDS = ("cuda", "auto", "simgpu")
_log = logging.getLogger("gpunet")


def rank_device(spec: str, comm: Communicator):
    """``(device, communicator)`` for this rank. "cuda", "simgpu" and "auto" take GPU ``local_rank % count`` where
    several ranks run (one process keeps the index it was given); a rank that cannot use it says which rank and
    host ("auto" then falls back to the CPU); GPU ranks get NCCL where every rank has it."""
    kind, _, given = spec.strip().lower().partition(":")
    if kind not in GPU_KINDS:
        return device(spec), comm
    if kind == "simgpu":
        cupy = simulated_cupy
    else:
        cupy, reason = probe_cuda(0)
        if cupy is None and kind == "cuda":
            raise CudaUnavailable(f"rank {comm.rank} on {comm.host} cannot use a GPU: {reason}")
        if kind == "auto" and _without_a_gpu(comm, reason if cupy is None else None):
            return device("cpu"), comm
        kind = "cuda"
    index = comm.local_rank % cupy.cuda.runtime.getDeviceCount() if comm.size > 1 else int(given or 0)
    try:
        dev = device(f"{kind}:{index}")
    except CudaUnavailable as exc:
        raise CudaUnavailable(f"rank {comm.rank} on {comm.host}: {exc}") from None
    dev.make_current()
    return dev, gpu_communicator(comm, index, cupy) if comm.size > 1 else comm


def _without_a_gpu(comm: Communicator, reason) -> bool:
    """Whether "auto" must train on the CPU: one collective verdict, since a rank on the CPU while the others wait
    in the GPU communicator's setup would leave the job in mismatched collectives. Rank 0 names the ranks
    without a GPU."""
    verdicts = comm.allgather(None if reason is None else (comm.host, reason))
    missing = [(rank, verdict) for rank, verdict in enumerate(verdicts) if verdict is not None]
    if missing and comm.size > 1 and comm.rank == 0:
        _log.warning("gpunet: every rank trains on the CPU: %s", "; ".join(
            f"rank {rank} on {host} cannot use a GPU ({why})" for rank, (host, why) in missing))
    return bool(missing)
