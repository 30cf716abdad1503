"""The simulated GPU (gpunet.devices.simgpu): what CUDA and CuPy enforce, enforced, so the cuda device's own code
(CudaDevice, CudaLauncher, the training loop) runs in CI; and that code run on it against the cpu."""
import json

import numpy as np
import pytest

import gpunet
from gpunet import nn, ops, optim
from gpunet.cuda.source import DTYPES, read_source
from gpunet.devices import CudaUnavailable, simgpu
from gpunet.devices.cuda import CudaDevice, CudaLauncher, probe_cuda
from tests.helpers import tolerance

cp = simgpu.cupy
PEER = r"The device where the array resides \(1\) is different from the current device \(0\)"


def test_arrays_belong_to_the_gpu_current_at_their_allocation():
    a = cp.zeros(3)
    with cp.cuda.Device(1):
        b = cp.ones(3)
        assert cp.cuda.Device().id == 1 and cp.cuda.runtime.getDevice() == 1
    assert a.device.id == 0 and b.device.id == 1 and cp.cuda.Device().id == 0
    assert b[1:].device.id == 1  # a view stays where its memory is
    assert cp.cuda.runtime.getDeviceCount() == 2


def test_arrays_of_two_gpus_cannot_meet_and_a_gpu_array_refuses_a_numpy_one():
    a = cp.zeros(3)
    with cp.cuda.Device(1):
        b = cp.ones(3)
    with pytest.raises(ValueError, match=PEER):
        a + b
    with pytest.raises(ValueError, match=PEER):
        b * 2  # an op runs on the current GPU, not on its operand's
    with pytest.raises(ValueError, match=PEER):
        b.astype(np.float32)
    with pytest.raises(ValueError, match=PEER):
        cp.stack([a, b])
    with pytest.raises(ValueError, match=PEER):
        a[...] = b
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3)
    with cp.cuda.Device(1):
        c = cp.asarray(a)  # a copy to the current GPU is allowed, as in CuPy
    assert c.device.id == 1
    filled = cp.full(2, a.sum(), dtype=np.float32)  # filled from a 0-d array of the current GPU, as CuPy does
    assert filled.device.id == 0 and filled.dtype == np.float32
    with pytest.raises(ValueError, match=PEER):
        cp.full(2, b.sum())


def test_every_host_synchronisation_is_counted():
    x = cp.arange(4.0)
    before = simgpu.host_syncs()
    s = x.sum()
    assert isinstance(s, cp.ndarray) and s.ndim == 0 and simgpu.host_syncs() == before  # a reduction stays on the GPU
    float(s), int(s), bool(s), s.item(), x.get(), cp.asnumpy(x), x[0].item()
    cp.cuda.get_current_stream().synchronize()
    cp.cuda.Device(0).synchronize()
    assert simgpu.host_syncs() == before + 9


def test_streams_events_and_the_gpu_count(monkeypatch):
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        assert cp.cuda.get_current_stream() is stream and stream.ptr != 0
    assert cp.cuda.get_current_stream().ptr == 0
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    end.record()
    assert end.done and cp.cuda.get_elapsed_time(start, end) >= 0
    monkeypatch.setenv(simgpu.COUNT_ENV, "4")
    assert cp.cuda.runtime.getDeviceCount() == 4 and cp.cuda.Device(3).id == 3
    monkeypatch.setenv(simgpu.COUNT_ENV, "1")
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        cp.cuda.Device(1)


def test_a_kernel_launches_on_the_current_gpu_and_refuses_another_gpus_array(tmp_path):
    """RawModule(path=...) reads the image's sidecar (the agreed cubin cache format) and runs the module's source
    in the simulator on the current GPU; CuPy's own compile (code=) is refused, as gpunet must never use it."""
    image = tmp_path / "abc.cubin"
    image.write_bytes(b"")
    (tmp_path / "abc.json").write_text(json.dumps({"module": "elementwise", "dtype": "float32", "arch": "sm_90",
                                                   "options": [], "format": "cubin"}))
    tanh = cp.RawModule(path=str(image)).get_function("tanh_forward")
    with cp.cuda.Device(1):
        x = cp.asarray(np.linspace(-2, 2, 5, dtype=np.float32))
        y = cp.empty_like(x)
        launches = simgpu.launches.get(1, 0)
        tanh((1,), (32,), (x, y, np.int64(5)))
        assert simgpu.launches[1] == launches + 1
    np.testing.assert_allclose(y.get(), np.tanh(x.get()), rtol=1e-6)
    with pytest.raises(ValueError, match=PEER):
        tanh((1,), (32,), (x, y, np.int64(5)))
    with pytest.raises(TypeError, match="Unsupported type"):
        tanh((1,), (32,), (np.zeros(5, np.float32), cp.zeros(5, np.float32), np.int64(5)))
    with pytest.raises(TypeError, match="exact C type"):
        tanh((1,), (32,), (cp.zeros(5, np.float32), cp.zeros(5, np.float32), 5))
    with pytest.raises(TypeError, match="compiled images only"):
        cp.RawModule(code=read_source("elementwise"), options=(f"-DSCALAR_T={DTYPES['float64'].scalar}",))
    with pytest.raises(RuntimeError, match="CUDA_ERROR_INVALID_IMAGE"):
        cp.RawModule(path=str(tmp_path / "abc.ptx"))  # the sidecar names a cubin


def test_the_cuda_device_probe_and_launcher_run_on_the_stand_in():
    dev = gpunet.device("simgpu:1")
    assert isinstance(dev, CudaDevice) and isinstance(dev.kernels, CudaLauncher) and dev.name == "simgpu:1"
    assert dev.describe()["gpu"] == "gpunet simulated GPU" and dev.describe()["arch"] == "sm_90"
    assert gpunet.device("cuda:0") if probe_cuda(0)[0] is not None else True
    with pytest.raises(CudaUnavailable, match="cuda:0"):
        if probe_cuda(0)[0] is None:
            CudaDevice(0)
        else:
            raise CudaUnavailable("cuda:0 is real here")
    with pytest.raises(ValueError, match="unknown device"):
        gpunet.device("simgpu:x")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_cross_entropy_on_the_simulated_gpu_equal_the_cpu(dtype):
    dev, rng = gpunet.device("simgpu:1"), np.random.default_rng(5)
    x = rng.standard_normal((7, 300)).astype(dtype)
    labels = rng.integers(0, 300, 7)
    got = ops.softmax(x, device=dev)
    assert got.device.id == 1
    rtol = 1e-12 if dtype == np.float64 else 3e-5
    np.testing.assert_allclose(dev.to_numpy(got), ops.softmax(x, device="cpu"), rtol=rtol)
    loss, grad = ops.softmax_cross_entropy_with_grad(x, labels, device=dev)
    want_loss, want_grad = ops.softmax_cross_entropy_with_grad(x, labels, device="cpu")
    np.testing.assert_allclose(dev.to_numpy(loss), want_loss, rtol=rtol)
    np.testing.assert_allclose(dev.to_numpy(grad), want_grad, rtol=rtol, atol=1e-7 * np.abs(want_grad).max())


def test_a_training_step_on_the_simulated_gpu_equals_the_cpu_and_makes_no_host_sync_but_the_loss_checks():
    def train(name):
        dev = gpunet.device(name)
        rng = np.random.default_rng(3)
        x, y = dev.asarray(rng.standard_normal((32, 5))), dev.asarray(rng.integers(0, 4, 32))
        model = nn.mlp([5, 8, 4], "tanh", seed=2, device=dev)
        loss_fn, opt = nn.SoftmaxCrossEntropy(check_labels=False, device=dev), optim.SGD(model.parameters(), lr=0.1)
        syncs = []
        for _ in range(3):
            before = simgpu.host_syncs()
            loss = loss_fn.forward(model.forward(x), y)
            model.backward(loss_fn.backward())
            opt.step()
            syncs.append(simgpu.host_syncs() - before)
        return dev.to_numpy(loss), model.state_dict(), syncs
    loss, weights, syncs = train("simgpu:1")
    want_loss, want_weights, _ = train("cpu")
    assert syncs == [0, 0, 0]
    rtol, atol = tolerance("training_run", np.float32)  # float32 weights; the kernels and NumPy sum in other orders
    np.testing.assert_allclose(loss, want_loss, rtol=rtol)
    for name, w in want_weights.items():
        np.testing.assert_allclose(weights[name], w, rtol=rtol, atol=atol)
