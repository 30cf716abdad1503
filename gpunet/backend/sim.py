"""The simulator device: NumPy arrays, but every custom op runs the CUDA kernel source on the CPU.

It exists to prove the kernels in ``kernels/`` without a GPU: the same ``.cu`` files, the same launch
configuration (``gpunet.launch``), executed one CPU thread per CUDA thread by ``gpunet.sim``.
"""
from .device import HostDevice


class SimDevice(HostDevice):
    name = "sim"

    def __init__(self):
        from ..sim.runner import SimKernelRunner

        self.kernels = SimKernelRunner(self)
