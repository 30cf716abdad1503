"""The CUDA device: CuPy arrays; every op runs its kernel from ``kernels/``, compiled once per (module, dtype) by
gpunet's NVRTC binding (``cuda.cubin_cache``) and loaded with ``cupy.RawModule(path=...)``. ``probe_cuda`` is the
one place that asks whether a GPU is usable."""
from __future__ import annotations

import types

import numpy as np

from .. import dtypes
from ..cuda import cubin_cache
from ..cuda.launcher import KernelLauncher
from ..cuda.source import check_arguments, element_dtype, signatures
from .base import Device, is_cupy_array
from .registry import register_device


class UnsupportedDtype(TypeError, ValueError):
    """An array of a dtype the GPU cannot hold (long double, objects, strings). Both a TypeError and a ValueError:
    the CPU path reports unsupported dtypes as ValueError, the kernel launcher as TypeError."""


# dtype kinds and chars CuPy has no device type for: objects, strings, void, and long double (float128).
_HOST_ONLY_KINDS, _HOST_ONLY_CHARS = "OSUV", "gG"


class CudaUnavailable(RuntimeError):
    """A CUDA device was asked for and cannot be used; the message says why."""


def probe_cuda(index: int = 0):
    """Return ``(cupy, None)`` when device ``index`` is usable, else ``(None, reason)``, the reason naming CUDA's
    own error.

    CuPy imports without a GPU; its ``is_available()`` then says only False, so the device count is asked for
    first: it raises ``CUDARuntimeError`` (``cudaErrorInsufficientDriver`` both for no driver and for one older
    than CuPy's CUDA runtime; ``cudaErrorNoDevice``). Any CUDA failure of the probe's allocation, out of memory
    (CuPy's ``OutOfMemoryError`` is a MemoryError) included, means the device is not usable, so that ``auto``
    falls back; anything else, a kernel compile error for one, is gpunet's or CuPy's bug and is not caught.
    """
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc}); install gpunet[cuda12] or gpunet[cuda13]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except RuntimeError as exc:
        return None, _driver_problem(cupy, exc)
    if not count or not cupy.cuda.is_available():
        return None, "CuPy is installed but no CUDA driver or device is available"
    if index >= count:
        return None, f"cuda:{index} asked for, but only {count} CUDA device(s) exist"
    try:
        with cupy.cuda.Device(index):
            cupy.zeros(1, dtype=cupy.float32).sum().item()
    except (RuntimeError, MemoryError) as exc:  # CUDARuntimeError, CUDADriverError, OutOfMemoryError
        return None, f"CuPy cannot use cuda:{index}: {type(exc).__name__}: {exc}"
    return cupy, None


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def _driver_problem(cupy, exc) -> str:
    """Why CUDA's device count failed, in words: no driver, a driver older than CuPy's runtime, or CUDA's error."""
    runtime = cupy.cuda.runtime
    error = f"{type(exc).__name__}: {exc}"
    if "cudaErrorInsufficientDriver" not in str(exc):
        return f"CuPy cannot use CUDA ({error})"
    try:
        driver, needed = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    except RuntimeError:
        driver, needed = 0, 0
    if not driver:
        return f"no NVIDIA driver is installed ({error})"
    return (f"the NVIDIA driver supports CUDA {_cuda_version(driver)}, older than CuPy's CUDA runtime "
            f"{_cuda_version(needed)} ({error}): update the driver, or install the CuPy of the driver's CUDA "
            f"(gpunet[cuda12] for CUDA 12)")


_NULL = np.uint64(0)


class CudaLauncher(KernelLauncher):
    """Kernels as functions of ``cupy.RawModule`` images gpunet compiled itself, with every argument checked against
    the kernel's signature."""

    def __init__(self, cupy, index: int):
        super().__init__(cupy)
        self.gpu = cupy.cuda.Device(index)
        self._kernels: dict = {}  # (module, kernel, dtype) -> (function, params, config, dtypes, scalar types)
        self._is_array = lambda a: isinstance(a, cupy.ndarray)
        props = cupy.cuda.runtime.getDeviceProperties(index)
        self.max_grid = int(props["multiProcessorCount"]) * 32
        self.arch = f"sm_{self.gpu.compute_capability}"
        name = props.get("name", "unknown GPU")
        self.gpu_name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)

    def load_module(self, module: str, config):
        """The cubin the NVRTC tests check, for this GPU's architecture (its PTX where the driver is too old)."""
        def load(path):
            with self.gpu:
                raw = self.xp.RawModule(path=str(path))
                raw.get_function(next(iter(signatures(module))))  # CuPy loads lazily: load here, where it can fall back
            return raw
        return cubin_cache.load_module(load, module, config.name, self.arch), config

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
        with self.gpu:
            function((plan.grid,), (plan.block,), converted, shared_mem=plan.shared_bytes)
        self.launches += 1


class OnGpu:
    """``target`` (the CuPy module, a random generator) with every call made while GPU ``gpu`` is current: CuPy
    allocates and launches on the current device, so without this a device's ``zeros_like``, ``matmul`` or draw
    would land on GPU 0 whatever GPU the device is. Sub-modules are wrapped alike; types pass through."""

    def __init__(self, target, gpu):
        self._target, self._gpu = target, gpu

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if isinstance(value, (types.ModuleType, types.SimpleNamespace)):
            value = OnGpu(value, self._gpu)
        elif callable(value) and not isinstance(value, type):
            value = self._on_gpu(value)
        if not isinstance(self._target, types.ModuleType) and callable(value):
            return value  # a generator's bound methods: not cached, the generator's state changes
        setattr(self, name, value)  # looked up once
        return value

    def _on_gpu(self, function):
        gpu = self._gpu

        def on_gpu(*args, **kwargs):
            with gpu:
                return function(*args, **kwargs)
        on_gpu.__name__ = getattr(function, "__name__", "function")
        on_gpu.__doc__ = getattr(function, "__doc__", None)
        return on_gpu

    def __repr__(self) -> str:
        return f"<{self._target!r} on {self._gpu!r}>"


class CudaDevice(Device):
    def __init__(self, index: int = 0, *, cupy=None, name: str | None = None):
        """GPU ``index`` through the installed CuPy, probed first. ``cupy``: another module that behaves like
        CuPy (a stand-in, for a device that runs this code without a GPU), used as given; ``name``: the device's
        name then (devices compare by name, so a stand-in must not be called ``cuda:N``)."""
        if cupy is None:
            cupy, reason = probe_cuda(index)
            if cupy is None:
                raise CudaUnavailable(f"device 'cuda:{index}' is not usable: {reason}")
        self.index = index
        self.name = name or f"cuda:{index}"
        self.kernels = CudaLauncher(cupy, index)
        self._gpu = self.kernels.gpu
        self.cupy = cupy
        self.xp = OnGpu(cupy, self._gpu)  # every allocation and array function through the device is on its GPU

    def context(self):
        return self._gpu

    def make_current(self) -> None:
        """Make this device's GPU the current one of this thread (a rank's own GPU, before its work starts):
        array operators (``a + b``, ``a[i] = v``) run on the current GPU, not on their operands'."""
        self._gpu.use()

    def seed_rng(self, seed: int):
        """A CuPy generator on this GPU whose draws also run there (its state lives on this GPU)."""
        return OnGpu(self.xp.random.default_rng(seed), self._gpu)

    @property
    def launcher(self) -> CudaLauncher:
        """The KernelLauncher that runs this device's ops (its ``kernels``)."""
        return self.kernels

    def describe(self) -> dict:
        return {**super().describe(), "gpu": self.kernels.gpu_name, "arch": self.kernels.arch}

    @property
    def kernel_launches(self) -> int:
        return self.launcher.launches

    def run(self, op, *args, **params):
        with self._gpu:
            return op.run(self.kernels, *args, **params)

    def asarray(self, a, dtype=None):
        wanted = np.dtype(dtype) if dtype is not None else getattr(a, "dtype", None)
        if wanted is not None and not is_cupy_array(a) and (
                wanted.kind in _HOST_ONLY_KINDS or wanted.char in _HOST_ONLY_CHARS):
            raise UnsupportedDtype(f"{self.name} cannot hold an array of dtype {wanted}, which gpunet does not "
                                   f"support on a GPU: use one of {', '.join(dtypes.NAMES)}")
        with self._gpu:
            return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return self.cupy.asnumpy(a)

    def owns(self, a) -> bool:
        return is_cupy_array(a) and a.device.id == self.index

    def synchronize(self) -> None:
        with self._gpu:
            self.xp.cuda.get_current_stream().synchronize()


register_device("cuda", CudaDevice, indexed=True)
