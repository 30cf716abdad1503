"""Fixtures the cross-entropy tests share."""
import pytest

# the host forms every cross-entropy option runs on: the compiled CPU kernels, the NumPy forms, the simulator
CROSS_ENTROPY_FORMS = ["cpu", "cpu-numpy", "sim"]


@pytest.fixture(params=CROSS_ENTROPY_FORMS)
def form(request, monkeypatch):
    """A device name, with the CPU's NumPy forms forced for "cpu-numpy"."""
    if request.param == "cpu-numpy":
        monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
        return "cpu"
    return request.param
