"""Fixtures the cross-entropy tests share."""
import pytest

# the host forms every cross-entropy option runs on: the compiled CPU kernels, the NumPy forms, the simulator
CROSS_ENTROPY_FORMS = ["cpu", "cpu-numpy", "sim"]


def _device_name(request, monkeypatch) -> str:
    if request.param == "cpu-numpy":
        monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
        return "cpu"
    return request.param


@pytest.fixture(params=CROSS_ENTROPY_FORMS)
def form(request, monkeypatch):
    """A device name, with the CPU's NumPy forms forced for "cpu-numpy"."""
    return _device_name(request, monkeypatch)


@pytest.fixture(params=[*CROSS_ENTROPY_FORMS, "simgpu"])
def device_form(request, monkeypatch):
    """As ``form``, and the cuda device over the simulated GPU (its results are its arrays: bring them to the host
    with ``gpunet.device(name).to_numpy``)."""
    return _device_name(request, monkeypatch)
