"""The CPU device: NumPy arrays, ops written as NumPy expressions."""
from .device import HostDevice


class CpuDevice(HostDevice):
    name = "cpu"
