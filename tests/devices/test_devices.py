"""Device selection: CPU fallback with a log line when CuPy is absent or has no GPU; "cuda" by name errors."""
import logging
import re
import sys
import types

import numpy as np
import pytest

import gpunet
from gpunet.devices import CudaUnavailable


class CUDARuntimeError(RuntimeError):
    """CuPy's error for a failed CUDA runtime call: its message starts with CUDA's error name."""


class OutOfMemoryError(MemoryError):
    """CuPy's out-of-memory error, a MemoryError and not a RuntimeError."""


def fake_cupy(available=True, alloc_error=None, count_error=None, driver=13020, runtime=13020):
    cupy = types.ModuleType("cupy")
    cuda = types.SimpleNamespace()
    cuda.is_available = lambda: available and count_error is None

    def get_device_count():
        if count_error is not None:
            raise count_error
        return 1
    cuda.runtime = types.SimpleNamespace(getDeviceCount=get_device_count, driverGetVersion=lambda: driver,
                                         runtimeGetVersion=lambda: runtime)

    class Dev:
        def __init__(self, i):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    cuda.Device = Dev
    cupy.cuda = cuda
    cupy.float32 = np.float32

    def zeros(*a, **k):
        raise alloc_error
    cupy.zeros = zeros
    return cupy


@pytest.mark.parametrize("setup,reason", [
    (lambda mp: mp.setitem(sys.modules, "cupy", None), "CuPy is not installed"),
    (lambda mp: mp.setitem(sys.modules, "cupy", fake_cupy(available=False)), "no CUDA driver or device"),
    (lambda mp: mp.setitem(sys.modules, "cupy", fake_cupy(alloc_error=RuntimeError("cudaErrorNoDevice"))),
     "cudaErrorNoDevice"),
    # a driver too old for cupy-cuda13x: CUDA's error and both versions, not "no CUDA driver or device"
    (lambda mp: mp.setitem(sys.modules, "cupy", fake_cupy(count_error=CUDARuntimeError(
        "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"), driver=12040)),
     r"driver supports CUDA 12\.4, older than CuPy's CUDA runtime 13\.2 \(CUDARuntimeError: "
     r"cudaErrorInsufficientDriver"),
    (lambda mp: mp.setitem(sys.modules, "cupy", fake_cupy(count_error=CUDARuntimeError(
        "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"), driver=0)),
     r"no NVIDIA driver is installed \(CUDARuntimeError: cudaErrorInsufficientDriver"),
    (lambda mp: mp.setitem(sys.modules, "cupy", fake_cupy(count_error=CUDARuntimeError(
        "cudaErrorNoDevice: no CUDA-capable device is detected"))), "CUDARuntimeError: cudaErrorNoDevice"),
    # out of memory during the probe: a MemoryError, still a reason to fall back
    (lambda mp: mp.setitem(sys.modules, "cupy", fake_cupy(alloc_error=OutOfMemoryError(
        "Out of memory allocating 512 bytes"))), "OutOfMemoryError: Out of memory allocating 512 bytes"),
])
def test_auto_falls_back_to_cpu_with_a_reason(monkeypatch, caplog, setup, reason):
    setup(monkeypatch)
    gpunet.devices._reset_for_tests()
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        dev = gpunet.device("auto")
    assert dev.name == "cpu"
    assert len(caplog.records) == 1 and re.search(reason, caplog.records[0].getMessage())
    with pytest.raises(CudaUnavailable, match=reason):
        gpunet.device("cuda")


def test_real_cupy_without_gpu_falls_back():
    """CI installs cupy-cuda13x where it can: it imports without a GPU and must not be used."""
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpunet.device("auto").name == "cpu"
    with pytest.raises(CudaUnavailable, match="cuda:0") as caught:
        gpunet.device("cuda:0")
    assert "cudaError" in str(caught.value), "the reason names CUDA's own error"


def test_compile_errors_are_not_swallowed(monkeypatch):
    class CompileError(Exception):
        pass
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(alloc_error=CompileError("nvrtc: error")))
    gpunet.devices._reset_for_tests()
    with pytest.raises(CompileError):
        gpunet.device("auto")


def test_default_device_from_environment(monkeypatch):
    monkeypatch.setenv("GPUNET_DEVICE", "cpu")
    gpunet.devices._reset_for_tests()
    assert gpunet.get_default_device().name == "cpu"
    monkeypatch.setenv("GPUNET_DEVICE", "tpu")
    gpunet.devices._reset_for_tests()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        gpunet.get_default_device()


@pytest.mark.parametrize("spec", ["gpu", "cpu:1", "cuda:x", ""])
def test_unknown_device_strings(spec):
    with pytest.raises(ValueError, match="unknown device"):
        gpunet.device(spec)


def test_device_roundtrip(dev):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = dev.asarray(a)
    assert dev.owns(b) and b.dtype == np.float32
    np.testing.assert_array_equal(dev.to_numpy(b), a)
    assert gpunet.device(dev.name) is dev
    assert gpunet.set_default_device(dev) is dev and gpunet.get_default_device() is dev


@pytest.mark.parametrize("rows", [1, 3, 1000, 70001])
def test_host_row_blocks_cover_every_row_once(rows):
    dev = gpunet.device("cpu")
    x = np.arange(rows, dtype=np.float64)[:, None] * np.ones((1, 8))
    out = np.zeros_like(x)
    calls = []

    def double(block, out_block):
        calls.append(len(block))
        out_block += 2 * block

    dev.kernels.map_rows(double, [x], [out])
    np.testing.assert_array_equal(out, 2 * x)  # every row written once, none twice
    assert sum(calls) == rows
    if rows * 64 > dev.kernels.block_bytes:
        assert max(calls) * 64 <= dev.kernels.block_bytes  # cache-sized blocks for the NumPy forms


def test_kernel_launches_counts_each_kernel_a_device_launches(dev):
    """Public counter (the bench counts a step's launches with it): one row op is one launch on a kernel
    device; the CPU runs no launched kernels and says None."""
    from gpunet import ops

    x = dev.asarray(np.ones((4, 5), dtype=np.float32))
    before = dev.kernel_launches
    ops.softmax(x, device=dev)
    ops.relu(x, device=dev)
    if dev.name == "cpu":
        assert before is None and dev.kernel_launches is None
    else:
        assert dev.kernel_launches - before == 2
