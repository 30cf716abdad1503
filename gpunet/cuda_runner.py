"""Launching kernels on a real GPU: ``cupy.RawModule`` per (module, dtype), compiled once and cached."""
from __future__ import annotations

from .backend.host import host_xp as np
from .kernel_runner import KernelRunner
from .kernel_source import check_arguments, dtype_config, read_source, signatures
from .nvrtc import compile_options


class CudaKernelRunner(KernelRunner):
    def __init__(self, device):
        super().__init__(device)
        self._modules: dict = {}
        props = device.xp.cuda.runtime.getDeviceProperties(device.index)
        self.max_grid = int(props["multiProcessorCount"]) * 32
        self.arch = f"sm_{props['major']}{props['minor']}"

    def module(self, module: str, dtype):
        config = dtype_config(dtype)
        key = (module, config.name)
        if key not in self._modules:
            # The NVRTC tests' options, minus the architecture (CuPy picks the device's own) and the ptxas flags
            # (CuPy may compile to PTX, where ptxas options do not apply).
            options = tuple(o for o in compile_options(config, self.arch)
                            if not o.startswith(("--gpu-architecture", "--ptxas-options")))
            with self.device._cuda_device:
                self._modules[key] = (self.xp.RawModule(code=read_source(module), options=options), config)
        return self._modules[key]

    def launch(self, module: str, plan, dtype, args) -> None:
        raw, config = self.module(module, dtype)
        params = signatures(module)[plan.kernel]
        bound = check_arguments(plan.kernel, params, args, config, lambda a: isinstance(a, self.xp.ndarray))
        # Scalars go by value with the kernel's exact C type; a missing pointer is a 64-bit null.
        converted = [(np.uint64(0) if value is None else value) if param.pointer else np.dtype(want).type(value)
                     for param, value, want in bound]
        with self.device._cuda_device:
            raw.get_function(plan.kernel)((plan.grid,), (plan.block,), tuple(converted),
                                          shared_mem=plan.shared_bytes)
