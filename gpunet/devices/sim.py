"""The simulator device: NumPy arrays, but every op runs its CUDA kernel from ``kernels/`` on the CPU.

It exists to prove the kernels without a GPU: the same ``.cu`` files and the same launch plans
(``gpunet.cuda.plans``), executed one CPU thread per CUDA thread (``gpunet/cuda/cuda_sim.h``, built by
``gpunet.cuda.sim_build``). Arguments are checked against each kernel's signature before every launch.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from ..cuda.launcher import KernelLauncher
from ..cuda.sim_build import build_module
from ..cuda.source import check_arguments, read_source, signatures_of
from .host import HostDevice
from .registry import register_device

_CTYPES = {"int32": ctypes.c_int32, "int64": ctypes.c_int64, "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64,
           "float32": ctypes.c_float, "float64": ctypes.c_double}


class SimulatorError(RuntimeError):
    """A kernel did something a GPU would not forgive (a bad shuffle, a deadlock, shared memory overrun...)."""


class SimModule:
    """One compiled module (a .cu file for one dtype) loaded into this process."""

    def __init__(self, module: str, config, sanitize=None, source=None):
        self.module, self.config = module, config
        self.source = source if source is not None else read_source(module)
        self.signatures = signatures_of(self.source)
        self.lib = ctypes.CDLL(str(build_module(module, config, sanitize, source)))

    def launch(self, kernel: str, grid, block, shared_bytes: int, args) -> None:
        if kernel not in self.signatures:
            raise KeyError(f"no kernel {kernel!r} in {self.module}.cu (has {sorted(self.signatures)})")
        bound = check_arguments(kernel, self.signatures[kernel], args, self.config,
                                lambda a: isinstance(a, np.ndarray))
        holders = []
        for param, value, dtype in bound:
            if param.pointer:
                if value is not None and "const" not in param.ctype.split("*")[0] and not value.flags.writeable:
                    raise ValueError(f"kernel {kernel}: parameter {param.name} is written to, but the array is "
                                     "read-only")
                holders.append(ctypes.c_void_p(None if value is None else value.ctypes.data))
            else:
                holders.append(_CTYPES[dtype.name](value))
        argv = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        grid3 = (ctypes.c_uint * 3)(*_dim3(grid))
        block3 = (ctypes.c_uint * 3)(*_dim3(block))
        err = ctypes.create_string_buffer(1024)
        fn = getattr(self.lib, f"gpunet_sim_launch_{kernel}")
        fn.restype = ctypes.c_int
        rc = fn(grid3, block3, ctypes.c_ulonglong(shared_bytes), argv, err, ctypes.c_int(len(err)))
        if rc != 0:
            raise SimulatorError(f"kernel {kernel} ({self.module}.cu, {self.config.name}) failed in the simulator: "
                                 f"{err.value.decode(errors='replace')}")


def _dim3(d):
    d = (d,) if isinstance(d, int) else tuple(d)
    return (d + (1, 1, 1))[:3]


class SimLauncher(KernelLauncher):
    max_grid = 4  # small on purpose: exercises every grid-stride loop, and each block costs thread switches

    def __init__(self):
        super().__init__(np)
        self.sanitize = os.environ.get("GPUNET_SIM_SANITIZE") or None

    def load_module(self, module: str, config) -> SimModule:
        return SimModule(module, config, self.sanitize)

    def launch(self, module: str, plan, dtype, args) -> None:
        self.module(module, dtype).launch(plan.kernel, plan.grid, plan.block, plan.shared_bytes, args)
        self.launches += 1


class SimDevice(HostDevice):
    name = "sim"

    def __init__(self):
        self.kernels = SimLauncher()

    @property
    def launcher(self) -> SimLauncher:
        """The KernelLauncher that runs this device's ops (its ``kernels``)."""
        return self.kernels

    @property
    def kernel_launches(self) -> int:
        return self.kernels.launches


register_device("sim", SimDevice)
