"""Shared fixtures: the devices every op is tested on, and per-dtype tolerances."""
from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.devices import probe_cuda

_cupy, _NO_GPU_REASON = probe_cuda(0)
HAS_GPU = _cupy is not None

gpu = pytest.mark.skipif(not HAS_GPU, reason=f"no usable CUDA device: {_NO_GPU_REASON}")


def _sim_param():
    return pytest.param("sim", id="sim")


# cpu always; sim (the CUDA kernels run on the CPU simulator) always; cuda where a GPU is present.
ALL_DEVICES = ["cpu", _sim_param(), pytest.param("cuda", marks=[pytest.mark.gpu, gpu], id="cuda")]
KERNEL_DEVICES = [_sim_param(), pytest.param("cuda", marks=[pytest.mark.gpu, gpu], id="cuda")]

# Forward/backward parity tolerances per dtype: (rtol, atol).
TOLERANCES = {np.float64: (1e-12, 1e-12), np.float32: (2e-5, 1e-6), np.float16: (2e-3, 1e-3)}


@pytest.fixture(params=ALL_DEVICES)
def dev(request, _default_device_cpu):
    """The device under test, also made the default: an op given host arrays without ``device=`` runs there
    (the simulator's arrays are NumPy arrays, which would otherwise fall to the CPU default)."""
    device = gpunet.device(request.param)
    gpunet.set_default_device(device)
    return device


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _default_device_cpu(monkeypatch):
    """Tests run with the CPU as default device unless they set another."""
    monkeypatch.setenv("GPUNET_DEVICE", "cpu")
    gpunet.devices._reset_for_tests()
    yield
    gpunet.devices._reset_for_tests()
