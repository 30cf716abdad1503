"""What the tests share besides fixtures (those are in conftest.py): the devices an op is tested on, the `gpu`
skip marker, and the one tolerance table. Imported as ``from tests.helpers import ...`` from every test folder."""
from __future__ import annotations

from typing import NamedTuple

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


class Tol(NamedTuple):
    rtol: float
    atol: float


# The one tolerance table: TOLERANCES[purpose][dtype] is Tol(rtol, atol), the per-dtype bounds of the comparisons
# named below. Single comparisons with one fixed bound (a finite-difference check, a float64 identity) keep it in
# their test.
TOLERANCES = {
    # One op against the NumPy form of the same maths, computed another way: the compiled CPU kernels against
    # their NumPy fallback in the same dtype (tests/cpu_kernels/), and the one-pass loss and gradient on each
    # device against forward then backward in float64 on the cpu (tests/ops/test_cross_entropy_with_grad.py).
    "numpy_form": {np.float64: Tol(1e-12, 1e-12), np.float32: Tol(2e-5, 1e-6), np.float16: Tol(2e-3, 1e-3)},
    # A kernel device (sim, cuda) against the cpu device, same op, same dtype, over every dispatch branch
    # (tests/ops/test_parity.py): float64 agrees to rounding, float32 to summation order; float16 accumulates in
    # float32 on both sides and rounds once.
    "cross_device": {np.float64: Tol(1e-12, 1e-14), np.float32: Tol(3e-5, 2e-6), np.float16: Tol(2e-3, 1e-3)},
    # Whole training runs, a kernel device against the cpu after 24 steps (tests/training/test_training_parity.py):
    # the losses within rtol, the weights within rtol and an atol of a hundredth of it.
    # One op against an independent float64 reference, value by value (tests/ops/test_gelu.py): a few units in the
    # last place of each dtype (float16 computed in float32 and rounded once), scaled by each value's condition in
    # the test; no absolute floor, so a kernel that flushed small outputs to zero would fail.
    "per_value": {np.float64: Tol(1e-13, 0.0), np.float32: Tol(3e-6, 0.0), np.float16: Tol(1e-3, 0.0)},
    "training_run": {np.float64: Tol(1e-9, 1e-9 * 1e-2), np.float32: Tol(2e-3, 2e-3 * 1e-2)},
}


def tolerance(purpose: str, dtype) -> Tol:
    """``TOLERANCES[purpose]`` for a dtype given as a type, a numpy.dtype or a name."""
    return TOLERANCES[purpose][np.dtype(dtype).type]
