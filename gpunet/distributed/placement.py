"""Which device a rank trains on: its node-local rank modulo the node's GPU count, chosen before NCCL starts."""
from __future__ import annotations

from ..devices import CudaUnavailable, device, probe_cuda
from .communicator import Communicator, gpu_communicator


def rank_device(spec: str, comm: Communicator):
    """``(device, communicator)`` for this rank. "cuda" and "auto" take GPU ``local_rank % count`` (a rank that
    cannot use it says which rank and host; "auto" then falls back to the CPU); GPU ranks get NCCL where it works."""
    kind = spec.strip().lower().split(":")[0]
    if kind not in ("cuda", "auto"):
        return device(spec), comm
    cupy, reason = probe_cuda(0)
    if cupy is None:
        if kind == "cuda":
            raise CudaUnavailable(f"rank {comm.rank} on {comm.host} cannot use a GPU: {reason}")
        return device("cpu"), comm
    index = comm.local_rank % cupy.cuda.runtime.getDeviceCount()
    try:
        dev = device(f"cuda:{index}")
    except CudaUnavailable as exc:
        raise CudaUnavailable(f"rank {comm.rank} on {comm.host}: {exc}") from None
    return dev, gpu_communicator(comm, index) if comm.size > 1 else comm
