"""A simulated GPU: the part of CuPy gpunet uses, over host memory, so that the ``cuda`` device's own code
(``CudaDevice``, ``CudaLauncher``, the NCCL communicator, the training loop) runs without a GPU, the way Numba's
CUDA simulator runs ``numba.cuda`` code.

It is chosen by name (device ``simgpu`` / ``simgpu:N``, ``$GPUNET_SIMGPU_COUNT`` GPUs, 2 by default); the real
CuPy is never replaced. It enforces what CUDA and CuPy enforce: an array belongs to the GPU that was current when it
was allocated, an op or a kernel launch runs on the current GPU and refuses an array of another (CuPy's error, as
without peer access) or a NumPy array (CuPy's TypeError), and kernels run in gpunet's simulator
(``gpunet.devices.sim``). Every host synchronisation (``asnumpy``, ``.get()``, ``.item()``, ``float()``,
``int()``, ``bool()``, ``synchronize``) adds one to ``host_syncs()``, so a test can assert that a step makes none;
allocations and launches are counted by GPU, and ``$GPUNET_SIMGPU_REPORT`` (a folder) gets each process's counts
at its exit (``usage()``), so a test of ``gpunet train --nproc`` sees where every array of every rank was made.

Known gap: an array is a NumPy subclass, so ``numpy.asarray(gpu_array)`` works here where CuPy raises.
"""
from __future__ import annotations

import atexit
import json
import os
import pathlib
import threading
import types

import numpy as np

from ..cuda.source import dtype_config, element_dtype, signatures_of
from . import simgpu_nccl
from .cuda import CudaDevice
from .registry import register_device
from .sim import SimModule
from .simgpu_streams import Event, Stream, get_current_stream, get_elapsed_time, host_syncs, synced as _synced

__all__ = ["cupy", "host_syncs", "launches", "allocations", "usage", "device_count", "current_id", "make_cupy",
           "ndarray"]

COUNT_ENV, NCCL_ENV, REPORT_ENV = "GPUNET_SIMGPU_COUNT", "GPUNET_SIMGPU_NCCL", "GPUNET_SIMGPU_REPORT"
_state = threading.local()
def device_count() -> int:
    text = os.environ.get(COUNT_ENV, "2")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{COUNT_ENV}={text!r}: must be a number of GPUs >= 1")
    return int(text)


def current_id() -> int:
    return getattr(_state, "device", 0)


def _device_error(array_id: int) -> ValueError:
    # CuPy's own words (cupy/_core/_kernel.pyx, _check_peer_access) where peer access is unavailable.
    return ValueError(f"The device where the array resides ({array_id}) is different from the current device "
                      f"({current_id()}). Peer access is unavailable between these devices.")


def _check(value) -> None:
    """Raise as CuPy does where ``value`` (an argument, a list of them) cannot take part in an op here."""
    if isinstance(value, ndarray):
        if value._device != current_id():
            raise _device_error(value._device)
    elif isinstance(value, np.ndarray) and value.ndim:
        raise TypeError(f"Unsupported type {np.ndarray}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check(v)


def _plain(value):
    if isinstance(value, ndarray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _on_device(value):
    """A function's result as arrays of the current GPU (a NumPy scalar becomes a 0-d array, as in CuPy)."""
    if isinstance(value, ndarray):
        return value
    if isinstance(value, np.ndarray):
        return value.view(ndarray)
    if isinstance(value, np.generic):
        return np.asarray(value).view(ndarray)
    if isinstance(value, tuple):
        return tuple(_on_device(v) for v in value)
    return value


class MemoryPointer:
    """``array.data``: where the array's memory is, and on which GPU (what NCCL is handed)."""

    def __init__(self, array):
        self.ptr, self.device_id = array.ctypes.data, array._device
        _POINTERS[self.ptr] = array._device


_POINTERS: dict = {}  # address -> GPU, of every array whose ``data`` was asked for


class ndarray(np.ndarray):  # noqa: N801  (CuPy's name)
    """An array in host memory that belongs to one simulated GPU (``.device.id``)."""

    __gpunet_gpu_array__ = True
    gpunet_device_family = "simgpu"

    def __array_finalize__(self, obj):
        if isinstance(obj, ndarray) and self.base is not None:
            self._device = obj._device  # a view: the same memory, the same GPU
            return
        self._device = current_id()
        if isinstance(obj, ndarray) and obj._device != self._device:  # a copy is a kernel on the current GPU
            raise _device_error(obj._device)
        allocations[self._device] = allocations.get(self._device, 0) + 1

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check(inputs)
        if out is not None:
            _check(out)
            kwargs["out"] = _plain(out)
        with np.errstate(all="ignore"):  # CuPy never warns of an overflow or a NaN: neither does its stand-in
            result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _on_device(result)

    def __array_function__(self, func, types_, args, kwargs):
        _check(args)
        _check(list(kwargs.values()))
        out, plain = kwargs.get("out"), _plain(args)
        result = func(*plain, **{k: _plain(v) for k, v in kwargs.items()})
        given = next((a for a, p in zip(args, plain) if p is result and a is not p), None)
        return out if out is not None else given if given is not None else _on_device(result)

    def __getitem__(self, key):
        gathers = any(isinstance(k, (np.ndarray, list)) for k in (key if isinstance(key, tuple) else (key,)))
        if gathers:  # a gather is a kernel on the current GPU, its index arrays there too
            _check(self)
            _check(key if isinstance(key, tuple) else (key,))
        result = super().__getitem__(_plain(key) if gathers else key)
        if isinstance(result, np.generic):  # CuPy keeps an element on the GPU, as a 0-d array
            result = _on_device(result)
            result._device = self._device
        return result.view(ndarray) if gathers else result

    def __setitem__(self, key, value):  # a kernel on the current GPU
        _check(self)
        _check(value)
        super().__setitem__(key, _plain(value))

    def __repr__(self):
        return f"{self.view(np.ndarray)!r} on simulated GPU {self._device}"

    @property
    def device(self):
        return Device(self._device)

    @property
    def data(self):
        return MemoryPointer(self)

    def get(self, stream=None, order="C", out=None):
        _synced()
        host = np.array(self.view(np.ndarray), order=order)
        if out is None:
            return host
        out[...] = host
        return out

    def set(self, arr, stream=None):  # a copy from the host: no kernel, any current GPU
        np.copyto(self.view(np.ndarray), arr)

    def item(self, *args):
        _synced()
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        _synced()
        return self.view(np.ndarray).tolist()

    def __float__(self):
        _synced()
        return float(self.view(np.ndarray))

    def __int__(self):
        _synced()
        return int(self.view(np.ndarray))

    def __index__(self):
        _synced()
        return self.view(np.ndarray).__index__()

    def __bool__(self):
        _synced()
        return bool(self.view(np.ndarray))


class Device:
    """``cupy.cuda.Device``: ``with Device(i):`` makes GPU ``i`` current; ``Device()`` is the current one."""

    def __init__(self, device=None):
        self.id = current_id() if device is None else int(device)
        if not 0 <= self.id < device_count():
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._saved: list[int] = []

    compute_capability = "90"

    def __enter__(self):
        self._saved.append(current_id())
        _state.device = self.id
        return self

    def __exit__(self, *exc):
        _state.device = self._saved.pop()

    def use(self):
        _state.device = self.id

    def synchronize(self):
        _synced()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Kernel:
    """A kernel of a RawModule: ``f(grid, block, args, shared_mem=0, stream=None)`` runs it in the simulator on the
    current GPU, its arguments checked as CuPy and the driver would (device arrays of the current GPU for pointers,
    a 64-bit null, scalars of the exact C type)."""

    def __init__(self, module: "RawModule", name: str):
        self.module, self.name = module, name

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        params = self.module.signatures[self.name]
        if not isinstance(grid, tuple) or not isinstance(block, tuple) or len(args) != len(params):
            raise TypeError(f"{self.name}: grid and block are tuples and {len(params)} arguments are passed")
        sim_args = []
        for param, value in zip(params, args):
            if param.pointer and isinstance(value, np.uint64) and value == 0:
                sim_args.append(None)
            elif param.pointer:
                if not isinstance(value, ndarray):
                    raise TypeError(f"Unsupported type {type(value)}")
                _check(value)
                sim_args.append(value.view(np.ndarray))
            else:
                want = element_dtype(param.base, self.module.config)
                if not isinstance(value, np.generic) or value.dtype != want:
                    raise TypeError(f"{self.name}: scalar {param.name} passed as {type(value).__name__}, not the "
                                    "kernel's exact C type")
                sim_args.append(value.item())
        self.module.sim.launch(self.name, grid, block, shared_mem, sim_args)
        launches[current_id()] = launches.get(current_id(), 0) + 1


launches: dict = {}  # GPU -> kernels launched on it
allocations: dict = {}  # GPU -> arrays allocated on it (a view allocates nothing)


def usage() -> dict:
    """This process's work on each simulated GPU: arrays allocated and kernels launched by GPU, host syncs."""
    return {"allocations": dict(allocations), "launches": dict(launches), "host_syncs": host_syncs()}


@atexit.register
def _report_usage() -> None:
    """``usage()`` into ``$GPUNET_SIMGPU_REPORT/<pid>.json`` with the MPI rank (``$PMI_RANK``), where it is set."""
    folder = os.environ.get(REPORT_ENV)
    if folder:
        record = {"rank": os.environ.get("PMI_RANK"), **usage()}
        pathlib.Path(folder, f"{os.getpid()}.json").write_text(json.dumps(record))


class RawModule:
    """``cupy.RawModule(path=...)``: a compiled image (``gpunet.cuda.cubin_cache``) whose sidecar ``<digest>.json``
    ({"module", "dtype", "format", ...}) says what it was compiled from; the simulator builds that same source for
    that dtype. CuPy's own compile (``code=``) is refused: gpunet compiles nothing through CuPy, whose compile adds
    ``-ftz=true`` behind its back (docs/semantics.md)."""

    def __init__(self, code=None, *, path=None, options=(), **unused):
        if code is not None or path is None:
            raise TypeError("the simulated GPU loads compiled images only (RawModule(path=...)): gpunet compiles "
                            "nothing through CuPy")
        path = pathlib.Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        if path.suffix != "." + meta["format"] or not path.is_file():
            raise RuntimeError(f"CUDA_ERROR_INVALID_IMAGE: {path} is not the {meta['format']} its sidecar names")
        self.config = dtype_config(np.dtype(meta["dtype"]))
        self.sim = SimModule(meta["module"], self.config)
        self.path, self.options = path, tuple(meta.get("options", ()))
        self.signatures = signatures_of(self.sim.source)

    def get_function(self, name):
        if name not in self.signatures:
            raise KeyError(f"no kernel {name!r} in the module")
        return Kernel(self, name)


class Generator:
    """``cupy.random.Generator``: its state lives on the GPU current at its creation, and draws run there."""

    def __init__(self, seed):
        self._rng, self._device = np.random.default_rng(seed), current_id()

    def __getattr__(self, name):
        draw = getattr(self._rng, name)

        def on_device(*args, **kwargs):
            if current_id() != self._device:
                raise _device_error(self._device)
            return _on_device(draw(*args, **kwargs))
        return on_device


def _module_function(name, func):
    def on_device(*args, **kwargs):
        result = func(*args, **kwargs)
        for a in args:  # NumPy's asarray-like functions return a base-class view where CuPy returns the array
            if isinstance(a, ndarray) and type(result) is np.ndarray and result.__array_interface__ == \
                    a.__array_interface__:
                return a
        return _on_device(result)
    on_device.__name__ = name
    return on_device


def asarray(a, dtype=None, order=None, *, blocking=False):
    """A copy on the current GPU (none where ``a`` is already there, in that dtype), as ``cupy.asarray``."""
    if isinstance(a, ndarray):
        if a._device == current_id():
            return a if dtype is None or a.dtype == np.dtype(dtype) else a.astype(dtype)
        a = a.view(np.ndarray)  # a peer copy
    return np.array(a, dtype=dtype, order=order or "K").view(ndarray)


def full(shape, fill_value, dtype=None, order="C"):
    """``cupy.full``: a new array of the current GPU, filled with a number or a 0-d array of the current GPU
    (NumPy's ``full`` would copy a device array into a host one, which the stand-in refuses)."""
    if isinstance(fill_value, ndarray):
        _check(fill_value)
        fill_value = fill_value.view(np.ndarray)
    return np.full(shape, fill_value, dtype=dtype, order=order).view(ndarray)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order)


def make_cupy(nccl: bool | None = None) -> types.ModuleType:
    """The stand-in CuPy module (``nccl``: whether NCCL is installed; ``$GPUNET_SIMGPU_NCCL`` != "0" by default)."""
    if nccl is None:
        nccl = os.environ.get(NCCL_ENV, "1") != "0"
    cupy = types.ModuleType("cupy", __doc__)
    direct = {"ndarray": ndarray, "asarray": asarray, "array": asarray, "asnumpy": asnumpy, "full": full,
              "RawModule": RawModule}
    cupy.__dict__.update(direct)
    cupy.random = types.SimpleNamespace(default_rng=lambda seed=None: Generator(seed), Generator=Generator)
    runtime = types.SimpleNamespace(
        getDeviceCount=device_count, getDevice=current_id, CUDARuntimeError=RuntimeError,
        getDeviceProperties=lambda i: {"name": b"gpunet simulated GPU", "multiProcessorCount": 2, "major": 9,
                                       "minor": 0, "totalGlobalMem": 2**34})
    cupy.cuda = types.SimpleNamespace(
        Device=Device, Stream=Stream, Event=Event, get_current_stream=get_current_stream, runtime=runtime,
        get_elapsed_time=get_elapsed_time, is_available=lambda: True, MemoryPointer=MemoryPointer,
        nccl=simgpu_nccl.module(available=nccl, device_of_pointer=_POINTERS.get, current_device=current_id))

    def fallback(name):
        value = getattr(np, name)
        if callable(value) and not isinstance(value, type):
            value = _module_function(name, value)
        setattr(cupy, name, value)
        return value
    cupy.__getattr__ = fallback
    return cupy


cupy = make_cupy()


def simgpu_device(index: int) -> CudaDevice:
    return CudaDevice(index, cupy=cupy, name=f"simgpu:{index}")


register_device("simgpu", simgpu_device, indexed=True)
