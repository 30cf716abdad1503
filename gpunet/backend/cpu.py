"""The CPU device: NumPy arrays, ops written as NumPy expressions, and compiled row kernels where the machine
can build them (softmax, log-softmax and the fused cross-entropy: ``gpunet.cpu_kernels``)."""
from .device import HostDevice, host_threads


class CpuDevice(HostDevice):
    name = "cpu"

    def compiled_block(self, op: str, dtype, **options):
        from .. import cpu_kernels

        return cpu_kernels.block(op, dtype, threads=host_threads(), **options)
