"""The CPU device: NumPy arrays, ops written as NumPy expressions, and compiled kernels where the machine can
build them (softmax, log-softmax, the fused cross-entropy and the optimizers' updates: ``gpunet.cpu_kernels``)."""
from .. import cpu_kernels
from .device import HostDevice, host_threads


class CpuDevice(HostDevice):
    name = "cpu"

    def compiled_block(self, op: str, dtype, **options):
        return cpu_kernels.block(op, dtype, threads=host_threads(), **options)
