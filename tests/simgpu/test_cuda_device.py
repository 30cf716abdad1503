"""The cuda device's own code (gpunet/devices/cuda.py) on the simulated GPU where the fakes of tests/devices do not
reach: the probe that succeeds or finds too few GPUs, a driver that cannot say its version, and CudaDevice's
placement helpers (OnGpu, the generator, owns, synchronize, describe, dtypes a GPU cannot hold)."""
import sys
import types

import numpy as np
import pytest

import gpunet
from gpunet.devices import simgpu
from gpunet.devices.cuda import CudaDevice, OnGpu, UnsupportedDtype, probe_cuda

cp = simgpu.cupy


def test_the_probe_takes_a_gpu_that_allocates_and_refuses_one_that_is_not_there(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", cp)
    before = simgpu.host_syncs()
    assert probe_cuda(1) == (cp, None)
    assert simgpu.host_syncs() == before + 1  # the probe reads its sum back: it is meant to wait for the GPU
    assert probe_cuda(2) == (None, "cuda:2 asked for, but only 2 CUDA device(s) exist")


def test_a_driver_that_cannot_say_its_version_reads_as_no_driver(monkeypatch):
    def no_version():
        raise RuntimeError("cudaErrorInsufficientDriver")

    def count():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime")
    runtime = types.SimpleNamespace(getDeviceCount=count, driverGetVersion=no_version, runtimeGetVersion=no_version)
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=runtime)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupy, reason = probe_cuda(0)
    assert cupy is None and reason.startswith("no NVIDIA driver is installed (RuntimeError: cudaErrorInsufficient")


def test_the_device_works_on_its_own_gpu_whichever_is_current():
    dev = gpunet.device("simgpu:1")
    assert cp.cuda.Device().id == 0
    a = dev.xp.zeros(3)  # OnGpu: allocated on GPU 1 though GPU 0 is current
    rng = dev.seed_rng(4)
    draw = rng.standard_normal(3)
    assert a.device.id == 1 and draw.device.id == 1 and dev.owns(a) and not dev.owns(cp.zeros(3))
    assert not dev.owns(np.zeros(3)) and "on <CUDA Device 1>" in repr(dev.xp)
    assert isinstance(dev.xp.cuda, OnGpu) and dev.xp.ndarray is cp.ndarray  # types pass through unwrapped
    np.testing.assert_array_equal(dev.to_numpy(draw), np.random.default_rng(4).standard_normal(3))
    before = simgpu.host_syncs()
    dev.synchronize()
    assert simgpu.host_syncs() == before + 1
    described = dev.describe()
    assert described["name"] == "simgpu:1" and described["arch"] == "sm_90"
    launches = dev.kernel_launches
    gpunet.ops.relu(dev.asarray(np.arange(-2.0, 2.0)))
    assert dev.kernel_launches == launches + 1


@pytest.mark.parametrize("dtype", [np.object_, np.str_, np.longdouble])
def test_a_dtype_no_gpu_holds_is_refused_with_the_ones_it_does(dtype):
    with pytest.raises(UnsupportedDtype, match=r"simgpu:0 cannot hold an array of dtype .* use one of float16"):
        gpunet.device("simgpu:0").asarray(np.zeros(2, dtype=dtype))


def test_a_device_over_a_stand_in_is_never_called_cuda():
    dev = CudaDevice(1, cupy=cp, name="simgpu:1")
    assert dev.name == "simgpu:1" and dev.index == 1 and dev.launcher is dev.kernels
