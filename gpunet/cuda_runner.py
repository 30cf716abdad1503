"""Launching kernels on a real GPU: ``cupy.RawModule`` per (module, dtype), compiled once and cached."""
from __future__ import annotations

from .backend.host import host_xp as np
from .kernel_runner import KernelRunner
from .kernel_source import check_arguments, dtype_config, element_dtype, read_source, signatures
from .nvrtc import compile_options


class CudaKernelRunner(KernelRunner):
    def __init__(self, device):
        super().__init__(device)
        self._modules: dict = {}
        self._kernels: dict = {}  # (module, kernel, dtype) -> (function, params, config, dtypes, scalar types)
        self._is_array = lambda a: isinstance(a, self.xp.ndarray)
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

    def kernel(self, module: str, kernel: str, dtype):
        """The compiled function and what its arguments need, looked up once per (module, kernel, dtype): a
        training step launches a dozen kernels, and each launch's host time counts on a fast GPU."""
        key = (module, kernel, dtype)
        entry = self._kernels.get(key)
        if entry is None:
            raw, config = self.module(module, dtype)
            params = signatures(module)[kernel]
            wants = tuple(element_dtype(p.base, config) for p in params)
            scalar_types = tuple(None if p.pointer else want.type for p, want in zip(params, wants))
            entry = self._kernels[key] = (raw.get_function(kernel), params, config, wants, scalar_types)
        return entry

    def launch(self, module: str, plan, dtype, args) -> None:
        function, params, config, wants, scalar_types = self.kernel(module, plan.kernel, dtype)
        bound = check_arguments(plan.kernel, params, args, config, self._is_array, wants)
        # Scalars go by value with the kernel's exact C type; a missing pointer is a 64-bit null.
        converted = tuple((_NULL if value is None else value) if scalar is None else scalar(value)
                          for (_, value, _), scalar in zip(bound, scalar_types))
        with self.device._cuda_device:
            function((plan.grid,), (plan.block,), converted, shared_mem=plan.shared_bytes)


_NULL = np.uint64(0)
