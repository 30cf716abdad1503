"""gpunet: small, auditable neural-network training on NVIDIA GPUs, with a NumPy CPU path and a CUDA simulator."""
from . import data, nn, ops, optim
from .devices import CudaUnavailable, Device, device, get_default_device, set_default_device

__version__ = "0.1.0"
__all__ = ["ops", "nn", "optim", "data", "device", "Device", "get_default_device", "set_default_device",
           "CudaUnavailable"]
