"""The GPU launcher, exercised without a GPU: CuPy's RawModule is replaced by a stand-in that loads the image
gpunet's NVRTC binding compiled (``RawModule(path=...)``, recording the path and the options its sidecar names),
checks every argument has the exact C type the kernel's signature asks for (CuPy passes scalars by their NumPy
type), then runs the kernel in the simulator. This proves the CUDA path's compile options and marshalling, which
the real parity tests on a GPU then only confirm."""
import json
import types
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet import ops
from gpunet.devices import registry
from gpunet.ops.activations import TANH
from gpunet.ops.cross_entropy import SOFTMAX_CROSS_ENTROPY
from gpunet.ops.softmax import LOG_SOFTMAX, SOFTMAX, SOFTMAX_BACKWARD
from gpunet.optim.adam import ADAM_UPDATE
from gpunet.optim.sgd import SGD_UPDATE
from gpunet.devices.cuda import CudaDevice, CudaLauncher
from gpunet import native
from gpunet.cuda.nvrtc import compile_options
from gpunet.cuda.source import DTYPES, element_dtype
from gpunet.devices.sim import SimModule


class StandInKernel:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, grid, block, args, shared_mem=0):
        params = self.module.signatures[self.name]
        assert isinstance(grid, tuple) and isinstance(block, tuple)
        assert len(args) == len(params)
        sim_args = []
        for param, value in zip(params, args):
            if param.pointer:
                if isinstance(value, np.ndarray):
                    sim_args.append(value)
                else:  # a null pointer must still be 8 bytes wide
                    assert isinstance(value, np.uint64) and value == 0, (self.name, param.name, value)
                    sim_args.append(None)
            else:
                want = element_dtype(param.base, self.module.config)
                assert isinstance(value, np.generic) and value.dtype == want, (self.name, param.name, type(value))
                sim_args.append(value.item())
        self.module.sim.launch(self.name, grid, block, shared_mem, sim_args)
        self.module.launches.append(self.name)


class StandInRawModule:
    """``cupy.RawModule`` as the cuda path must call it: a compiled image's ``path`` and nothing to compile."""
    instances = []

    def __init__(self, code=None, *, path=None, options=(), **compile_arguments):
        assert code is None and not options and not compile_arguments, "CuPy must compile nothing for gpunet"
        self.path = Path(path)
        sidecar = json.loads(self.path.with_suffix(".json").read_text())
        self.options, self.format = sidecar["options"], sidecar["format"]
        assert self.path.suffix == "." + self.format and self.path.stat().st_size > 0
        self.config = DTYPES[sidecar["dtype"]]
        self.sim = SimModule(sidecar["module"], self.config)
        self.signatures = self.sim.signatures
        self.launches = []
        StandInRawModule.instances.append(self)

    def get_function(self, name):
        assert name in self.signatures, name
        return StandInKernel(self, name)


class StandInGpu:
    """``cupy.cuda.Device(i)``: a context, and the architecture CuPy reports (``compute_capability``)."""
    compute_capability = "90"

    def __init__(self, index):
        self.id = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def stand_in_cupy(raw_module=None):
    """NumPy dressed as CuPy: RawModule is the stand-in above, one GPU of 2 SMs, architecture sm_90."""
    cupy = types.ModuleType("cupy")
    cupy.__getattr__ = lambda name: getattr(np, name)
    cupy.ndarray = np.ndarray
    cupy.RawModule = raw_module or StandInRawModule
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceProperties=lambda i: {"multiProcessorCount": 2, "major": 9, "minor": 0}), Device=StandInGpu)
    StandInRawModule.instances.clear()
    return cupy


@pytest.fixture
def runner():
    return CudaLauncher(stand_in_cupy(), 0)


def test_the_cuda_device_over_a_stand_in_cupy_registers_as_a_device_of_its_own(monkeypatch):
    """What a simulated GPU needs of the registry (docs/adding-a-device.md): the cuda device's own code over a
    stand-in CuPy, registered under a name of its own, nothing in the other devices changed."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    cupy = stand_in_cupy()
    gpunet.devices.register_device("standin", lambda i: CudaDevice(i, cupy=cupy, name=f"standin:{i}"),
                                   indexed=True)
    dev = gpunet.device("standin")
    assert dev.name == "standin:0" and dev is gpunet.device("standin:0") and isinstance(dev.kernels, CudaLauncher)
    x = np.random.default_rng(3).standard_normal((4, 40))
    np.testing.assert_allclose(ops.softmax(x, device=dev), ops.softmax(x, device="cpu"), rtol=1e-12)
    assert [m.launches for m in StandInRawModule.instances] == [["softmax_forward_warp2"]]


def test_the_gpu_loads_the_cubin_the_nvrtc_tests_compile(runner):
    """The device's cubin: compiled by gpunet for the device's own architecture with the NVRTC tests' options
    (compile_module(..., verbose=True) in test_nvrtc.py), cached under <cache>/cuda, loaded by path."""
    SOFTMAX.run(runner, np.zeros((2, 3), np.float32))
    (module,) = StandInRawModule.instances
    assert module.format == "cubin" and module.path.parent == native.cache_root() / "cuda"
    assert module.options == compile_options(DTYPES["float32"], "sm_90", verbose=True)
    assert "--gpu-architecture=sm_90" in module.options and "--ftz=false" in module.options
    assert runner.max_grid == 64 and runner.arch == "sm_90"


@pytest.mark.parametrize("cols", [10, 2000, 20000])
def test_row_ops_through_the_gpu_launcher(runner, cols):
    rng = np.random.default_rng(cols)
    x = rng.standard_normal((3, cols))
    dy = rng.standard_normal((3, cols))
    np.testing.assert_allclose(SOFTMAX.run(runner, x), ops.softmax(x, device="cpu"), rtol=1e-12)
    np.testing.assert_allclose(LOG_SOFTMAX.run(runner, x), ops.log_softmax(x, device="cpu"), rtol=1e-12)
    y = ops.softmax(x, device="cpu")
    np.testing.assert_allclose(SOFTMAX_BACKWARD.run(runner, y, dy), ops.softmax_backward(y, dy, device="cpu"),
                               rtol=1e-10, atol=1e-15)
    labels = np.array([0, -100, cols - 1])
    loss, p = SOFTMAX_CROSS_ENTROPY.run(runner, x, labels, -100)
    want_loss, want_p = ops.softmax_cross_entropy(x, labels, reduction="none", device="cpu")
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(p, want_p, rtol=1e-12)
    with pytest.raises(ValueError, match=f"label {cols} at row 1"):
        SOFTMAX_CROSS_ENTROPY.run(runner, x, np.array([0, cols, 1]), -100)


def test_elementwise_and_optimizers_through_the_gpu_launcher(runner):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_allclose(TANH.run(runner, x), np.tanh(x), rtol=1e-6)
    w, g = rng.standard_normal(9), rng.standard_normal(9)
    expected = w - 0.1 * (g + 0.0 * w)
    SGD_UPDATE.run(runner, [w], [g], None, hyper=(0.1, 0.0, 0, 0.0))  # no momentum: a null velocity pointer
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    m, v = np.zeros(9), np.zeros(9)
    ADAM_UPDATE.run(runner, [w], [g], [m], [v], hyper=(0.01, 0.9, 0.999, 1e-8, 0.0, 0, 0.01 / 0.1, 1 / np.sqrt(0.001)))
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-12)
