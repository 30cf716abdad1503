"""Devices: the one place that knows which device is present and how an op runs on it.

``base`` (the Device interface), ``registry`` (a name -> a factory; ``device(spec)``), ``host`` (what NumPy-array
devices share), ``cpu`` (compiled CPU kernels or NumPy forms), ``sim`` (the CUDA kernels on the CPU simulator),
``cuda`` (the CUDA kernels through CuPy), ``simgpu`` (the ``cuda`` device over a simulated GPU, a stand-in
CuPy). Each device module registers itself; the op kinds every device implements are in ``gpunet.kinds``.

``device("cpu" | "sim" | "cuda" | "cuda:N" | "simgpu" | "simgpu:N" | "auto")``. The default device is
``$GPUNET_DEVICE``, else "auto", and ``set_default_device`` changes it. "auto" takes the GPU when CuPy imports,
sees a device and can allocate on it, and otherwise falls back to the CPU with one log line saying why. "cuda"
asked for by name never falls back; "auto" never takes the simulated GPU.
"""
from __future__ import annotations

import logging
import os

from . import cpu, cuda, sim, simgpu  # noqa: F401  (each registers itself)
from .base import Device, is_cupy_array
from .cuda import CudaUnavailable, probe_cuda
from .registry import device, forget_devices, register_device, registered_devices

__all__ = ["Device", "CudaUnavailable", "device", "get_default_device", "set_default_device", "device_of",
           "probe_cuda", "register_device", "registered_devices"]

log = logging.getLogger("gpunet")

_default: Device | None = None


def _auto_device() -> Device:
    """The GPU when it is usable, else the CPU with one log line saying why."""
    cupy, reason = probe_cuda(0)
    if cupy is None:
        log.warning("gpunet: using the CPU (NumPy): %s", reason)
        return device("cpu")
    return device("cuda:0")


register_device("auto", _auto_device)


def get_default_device() -> Device:
    global _default
    if _default is None:
        _default = device(os.environ.get("GPUNET_DEVICE", "auto"))
    return _default


def set_default_device(spec: "str | Device") -> Device:
    """Make ``spec`` the device that ops use for NumPy inputs and that models are built on."""
    global _default
    _default = device(spec)
    return _default


def device_of(array, device_spec=None) -> Device:
    """The device an op runs on: ``device_spec`` if given, the GPU a CuPy array lives on, else the default."""
    if device_spec is not None:
        return device(device_spec)
    if is_cupy_array(array):
        return device(f"{getattr(type(array), 'gpunet_device_family', 'cuda')}:{array.device.id}")
    return get_default_device()


def _reset_for_tests() -> None:
    global _default
    forget_devices()
    _default = None
