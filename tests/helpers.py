"""What the tests share besides fixtures (those are in conftest.py): the devices an op is tested on, the `gpu`
skip marker, and the one tolerance table. Imported as ``from tests.helpers import ...`` from every test folder."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from gpunet import nn, optim
from gpunet.devices import probe_cuda

_cupy, _NO_GPU_REASON = probe_cuda(0)
HAS_GPU = _cupy is not None

gpu = pytest.mark.skipif(not HAS_GPU, reason=f"no usable CUDA device: {_NO_GPU_REASON}")


def _sim_param():
    return pytest.param("sim", id="sim")


def _simgpu_param():
    """The cuda device's own code over the simulated GPU (gpunet.devices.simgpu), as the cuda param on GPU 0: the
    same assertions as on a real GPU, so a lent GPU shows whether the stand-in tells the truth (GPU 1 while GPU 0
    is current: tests/simgpu/)."""
    return pytest.param("simgpu", id="simgpu")


# cpu always; sim (the CUDA kernels run on the CPU simulator) always; the cuda device on a simulated GPU always;
# cuda where a GPU is present.
ALL_DEVICES = ["cpu", _sim_param(), _simgpu_param(), pytest.param("cuda", marks=[pytest.mark.gpu, gpu], id="cuda")]
KERNEL_DEVICES = [_sim_param(), _simgpu_param(), pytest.param("cuda", marks=[pytest.mark.gpu, gpu], id="cuda")]


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
    # One op against an independent float64 reference, value by value (tests/ops/test_gelu.py): a few units in the
    # last place of each dtype (float16 computed in float32 and rounded once), scaled by each value's condition in
    # the test; no absolute floor, so a kernel that flushed small outputs to zero would fail.
    "per_value": {np.float64: Tol(1e-13, 0.0), np.float32: Tol(3e-6, 0.0), np.float16: Tol(1e-3, 0.0)},
    # Whole training runs, a kernel device against the cpu after 24 steps (tests/training/test_training_parity.py):
    # the losses within rtol, the weights within rtol and an atol of a hundredth of it.
    "training_run": {np.float64: Tol(1e-9, 1e-9 * 1e-2), np.float32: Tol(2e-3, 2e-3 * 1e-2)},
}


def tolerance(purpose: str, dtype) -> Tol:
    """``TOLERANCES[purpose]`` for a dtype given as a type, a numpy.dtype or a name."""
    return TOLERANCES[purpose][np.dtype(dtype).type]


def assert_per_value(got, want, dtype, scale=None, purpose: str = "cross_device"):
    """Value by value: the same NaN and inf pattern, and ``|got - want| <= rtol * scale`` for every finite
    value, where ``scale`` is ``|want|`` unless given (for a value computed as a sum whose terms cancel, the size
    of those terms). The only absolute slack is the dtype's smallest normal number: a form that flushed small
    outputs to zero fails, where an ``atol`` of the dtype's resolution would let it pass."""
    got = np.asarray(got).astype(np.float64)
    want = np.asarray(want).astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN pattern")
    infinite = np.isinf(want)
    np.testing.assert_array_equal(got[infinite], want[infinite], err_msg="inf pattern")
    scale = np.abs(want) if scale is None else np.broadcast_to(np.asarray(scale, np.float64), want.shape)
    bound = tolerance(purpose, dtype).rtol * scale + np.finfo(dtype).tiny
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(want) & ~(np.abs(got - want) <= bound)
    if bad.any():
        where = np.argwhere(bad)[:5]
        rows = ", ".join(f"{tuple(i)}: got {got[tuple(i)]:.9g}, want {want[tuple(i)]:.9g} (bound {bound[tuple(i)]:.3g})"
                         for i in where)
        raise AssertionError(f"{int(bad.sum())} of {bad.size} values differ more than {purpose} allows: {rows}")


# The size of what each row op's output is computed from, per value, for ``assert_per_value``: a value's rounding
# error is relative to these, not to the value itself where terms cancel. All in float64, NaN and inf ignored.
def _finite(a):
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a), a, 0.0)


def log_softmax_scale(x):
    """x - m - log s: the terms, and 1 for log s itself (a sum's relative rounding error becomes an absolute
    error of log s, which matters where log p is near 0)."""
    x = _finite(x)
    m = x.max(axis=-1, keepdims=True)
    return np.abs(x - m) + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)) + 1.0


def softmax_backward_scale(y, dy):
    """y (dy - sum(dy y)): |y| times |dy| and the row's sum of |dy y|."""
    y, dy = _finite(y), _finite(dy)
    return np.abs(y) * (np.abs(dy) + np.abs(dy * y).sum(axis=-1, keepdims=True))


def log_softmax_backward_scale(logy, dy):
    """dy - exp(logy) sum(dy): |dy| and exp(logy) times the row's sum of |dy|."""
    logy, dy = np.asarray(logy, np.float64), _finite(dy)
    return np.abs(dy) + np.exp(np.where(np.isfinite(logy), logy, -np.inf)) * np.abs(dy).sum(axis=-1, keepdims=True)


def train_small_mlp(dev, sizes, steps, optimizer="sgd", inplace_relu=True, dropout=0.0, seed=0, batch=32):
    """``steps`` full-batch steps of ``nn.mlp(sizes, "relu")`` on seeded data: the logits of each step and the
    final weights, as NumPy arrays. ``inplace_relu=False`` turns nn.mlp's in-place (hence fused) ReLU off."""
    rng = np.random.default_rng(seed)
    x = dev.asarray(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = dev.asarray(rng.integers(0, sizes[-1], batch))
    model = nn.mlp(sizes, "relu", dropout=dropout, seed=seed + 1, device=dev)
    for layer in model.layers:
        if isinstance(layer, nn.ReLU):
            layer.inplace = inplace_relu
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    opt = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else optim.Adam(model.parameters(), lr=1e-2))
    logits = []
    for _ in range(steps):
        out = model.forward(x)
        logits.append(dev.to_numpy(out))
        loss_fn.forward(out, y)
        model.backward(loss_fn.backward())
        opt.step()
    return logits, {k: dev.to_numpy(v) for k, v in model.state_dict().items()}
