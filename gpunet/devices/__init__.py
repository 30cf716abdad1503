"""Devices: the one place that knows which device is present and how an op runs on it.

``base`` (the Device interface), ``host`` (what NumPy-array devices share), ``cpu`` (compiled CPU kernels or NumPy
forms), ``sim`` (the CUDA kernels on the CPU simulator), ``cuda`` (the CUDA kernels through CuPy); ``op`` is what
every op declares once.


``device("cpu" | "sim" | "cuda" | "cuda:N" | "auto")``. The default device is ``$GPUNET_DEVICE``, else "auto",
and ``set_default_device`` changes it. "auto" takes the GPU when CuPy imports, sees a device and can allocate on
it, and otherwise falls back to the CPU with one log line saying why. "cuda" asked for by name never falls back.
"""
from __future__ import annotations

import logging
import os
import re

from .base import Device, is_cupy_array
from .cpu import CpuDevice
from .cuda import CudaDevice, CudaUnavailable, probe_cuda
from .op import Op
from .sim import SimDevice

__all__ = ["Device", "Op", "CudaUnavailable", "device", "get_default_device", "set_default_device", "device_of",
           "probe_cuda"]

log = logging.getLogger("gpunet")

_DEVICES: dict[str, Device] = {}
_default: Device | None = None
_DEVICE_SPEC = re.compile(r"^(cpu|sim|auto|cuda)(?::(\d+))?$")


def device(spec: "str | Device" = "auto") -> Device:
    """The Device named by ``spec`` (instances are cached, so ``device("cpu") is device("cpu")``)."""
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device spec must be a string or a Device, got {type(spec).__name__}: {spec!r}")
    match = _DEVICE_SPEC.match(spec.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'sim', 'cuda', 'cuda:N' or 'auto'")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "auto":
        return _auto_device()
    key = f"cuda:{index}" if kind == "cuda" else kind
    if key not in _DEVICES:
        if kind == "cpu":
            _DEVICES[key] = CpuDevice()
        elif kind == "sim":
            _DEVICES[key] = SimDevice()
        else:
            _DEVICES[key] = CudaDevice(index)
    return _DEVICES[key]


def _auto_device() -> Device:
    if "auto" not in _DEVICES:
        cupy, reason = probe_cuda(0)
        if cupy is None:
            log.warning("gpunet: using the CPU (NumPy): %s", reason)
            _DEVICES["auto"] = device("cpu")
        else:
            _DEVICES["auto"] = device("cuda:0")
    return _DEVICES["auto"]


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
        return device(f"cuda:{array.device.id}")
    return get_default_device()


def _reset_for_tests() -> None:
    global _default
    _DEVICES.clear()
    _default = None
