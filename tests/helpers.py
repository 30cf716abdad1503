"""What the tests share besides fixtures (those are in conftest.py): the devices an op is tested on, the `gpu`
skip marker, and the tolerance table. Imported as ``from tests.helpers import ...`` from every test folder."""
from __future__ import annotations

import numpy as np
import pytest

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
