"""gpunet: small, auditable neural-network training on NVIDIA GPUs, with a NumPy CPU path and a CUDA simulator."""
from . import ops
from .backend import CudaUnavailable, Device, device, get_default_device, set_default_device

__version__ = "0.1.0"
__all__ = ["ops", "device", "Device", "get_default_device", "set_default_device", "CudaUnavailable"]
