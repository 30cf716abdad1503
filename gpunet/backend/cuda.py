"""The CUDA device: CuPy arrays, custom ops through ``cupy.RawModule`` kernels compiled from ``kernels/``."""
from __future__ import annotations

from .device import Device, _is_cupy_array
from .host import host_xp as np


class UnsupportedDtype(TypeError, ValueError):
    """An array of a dtype the GPU cannot hold (long double, objects, strings). Both a TypeError and a ValueError:
    the CPU path reports unsupported dtypes as ValueError, the kernel launcher as TypeError."""


# dtype kinds and chars CuPy has no device type for: objects, strings, void, and long double (float128).
_HOST_ONLY_KINDS, _HOST_ONLY_CHARS = "OSUV", "gG"


class CudaUnavailable(RuntimeError):
    """A CUDA device was asked for and cannot be used; the message says why."""


def probe_cuda(index: int = 0):
    """Return ``(cupy, None)`` when device ``index`` is usable, else ``(None, reason)``.

    CuPy imports without a GPU; ``is_available()`` may then say False, and otherwise the first allocation raises
    ``CUDARuntimeError`` (a RuntimeError). Anything else, a kernel compile error for one, is not caught.
    """
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc}); install gpunet[cuda12] or gpunet[cuda13]"
    try:
        if not cupy.cuda.is_available():
            return None, "CuPy is installed but no CUDA driver or device is available"
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            return None, f"cuda:{index} asked for, but only {count} CUDA device(s) exist"
        with cupy.cuda.Device(index):
            cupy.zeros(1, dtype=cupy.float32).sum().item()
    except RuntimeError as exc:
        return None, f"CuPy cannot use the GPU: {type(exc).__name__}: {exc}"
    return cupy, None


class CudaDevice(Device):
    def __init__(self, index: int = 0):
        cupy, reason = probe_cuda(index)
        if cupy is None:
            raise CudaUnavailable(f"device 'cuda:{index}' is not usable: {reason}")
        from ..cuda_runner import CudaKernelRunner

        self.index = index
        self.name = f"cuda:{index}"
        self.xp = cupy
        self._cuda_device = cupy.cuda.Device(index)
        self.kernels = CudaKernelRunner(self)

    def asarray(self, a, dtype=None):
        wanted = np.dtype(dtype) if dtype is not None else getattr(a, "dtype", None)
        if wanted is not None and not _is_cupy_array(a) and (
                wanted.kind in _HOST_ONLY_KINDS or wanted.char in _HOST_ONLY_CHARS):
            raise UnsupportedDtype(f"{self.name} cannot hold an array of dtype {wanted}, which gpunet does not "
                                   "support on a GPU: use float16, float32 or float64")
        with self._cuda_device:
            return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return self.xp.asnumpy(a)

    def owns(self, a) -> bool:
        return _is_cupy_array(a) and a.device.id == self.index

    def synchronize(self) -> None:
        with self._cuda_device:
            self.xp.cuda.get_current_stream().synchronize()
