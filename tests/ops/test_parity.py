"""Parity across devices: every custom kernel against the NumPy path, forward and backward, over every dispatch
branch (warp with sub-warp groups, shared-memory block, uncached block) and the edges of each.

Reference: the "cpu" device (NumPy). Compared: "sim" (the CUDA source on the CPU simulator) always, "cuda" where
a GPU is present. Every value is compared with a tolerance relative to it (or, where its terms cancel, to the
size of its terms): ``assert_per_value`` with TOLERANCES["cross_device"] in tests/helpers.py. A kernel that
flushed small outputs to zero fails here (test_a_kernel_that_flushes_small_outputs_fails_parity).
"""
import re

import numpy as np
import pytest

import gpunet
from gpunet import ops
from gpunet.ops.cross_entropy import SOFTMAX_CROSS_ENTROPY
from gpunet.ops.softmax import SOFTMAX

from tests.helpers import (KERNEL_DEVICES, assert_per_value, log_softmax_backward_scale, log_softmax_scale,
                           softmax_backward_scale)
# C = 1..1024: warp variant (sub-warp groups up to 32, then 2..32 values per lane); 1025..6144 (float32: 12288):
# shared memory; 20000 float32 = 80 KB > 48 KB of shared memory: the uncached variant.
WIDTHS = [1, 2, 10, 31, 32, 33, 1000, 1024, 1025, 5000, 20000]
ROWS = [1, 3]


@pytest.fixture(params=KERNEL_DEVICES)
def kdev(request):
    return gpunet.device(request.param)


def logits(rows, cols, dtype, seed=0, scale=4.0):
    return (np.random.default_rng(seed + rows * 7919 + cols).standard_normal((rows, cols)) * scale).astype(dtype)


def same(dev, got, want, dtype, scale=None):
    assert_per_value(dev.to_numpy(got), want, dtype, scale)


def forward_scale(forward, x):
    return log_softmax_scale(x) if forward is ops.log_softmax else None


def backward_scale(forward, y, dy):
    return (log_softmax_backward_scale if forward is ops.log_softmax else softmax_backward_scale)(y, dy)


def cross_entropy_loss_scale(x, labels, reduction, ignore_index=-100):
    """log s - (x_label - m) per row: both terms; summed (and averaged) as the reduction does."""
    x = np.asarray(x, np.float64)
    m = x.max(axis=1)
    valid = labels != ignore_index
    picked = x[np.arange(len(labels)), np.where(valid, labels, 0)]
    with np.errstate(invalid="ignore"):  # rows of -inf: NaN scale, where the loss is NaN too
        rows = np.where(valid, np.abs(picked - m) + np.log(np.exp(x - m[:, None]).sum(axis=1)), 0.0)
    return rows if reduction == "none" else rows.sum() / (max(valid.sum(), 1) if reduction == "mean" else 1)


def cross_entropy_grad_scale(p, labels, row_scale, ignore_index=-100):
    """(p - onehot) * row_scale: both terms, per value."""
    onehot = np.zeros_like(p, dtype=np.float64)
    valid = labels != ignore_index
    onehot[np.arange(len(labels))[valid], labels[valid]] = 1
    return (np.abs(p) + onehot) * np.abs(np.asarray(row_scale, np.float64)).reshape(-1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", WIDTHS)
@pytest.mark.parametrize("rows", ROWS)
def test_softmax_family(kdev, rows, cols, dtype):
    cpu = gpunet.device("cpu")
    x = logits(rows, cols, dtype)
    dy = logits(rows, cols, dtype, seed=1, scale=1.0)
    for forward, backward in ((ops.softmax, ops.softmax_backward), (ops.log_softmax, ops.log_softmax_backward)):
        y_ref = forward(x, device=cpu)
        y = forward(kdev.asarray(x), device=kdev)
        assert y.dtype == dtype and y.shape == x.shape
        same(kdev, y, y_ref, dtype, forward_scale(forward, x))
        same(kdev, backward(kdev.asarray(y_ref), kdev.asarray(dy), device=kdev), backward(y_ref, dy, device=cpu),
             dtype, backward_scale(forward, y_ref, dy))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", WIDTHS)
@pytest.mark.parametrize("rows", ROWS)
def test_cross_entropy(kdev, rows, cols, dtype):
    cpu = gpunet.device("cpu")
    x = logits(rows, cols, dtype)
    labels = np.arange(rows) * 7 % cols
    if rows > 1:
        labels[1] = -100
    for reduction in ("none", "mean"):
        loss_ref, p_ref = ops.softmax_cross_entropy(x, labels, reduction=reduction, device=cpu)
        loss, p = ops.softmax_cross_entropy(kdev.asarray(x), kdev.asarray(labels), reduction=reduction, device=kdev)
        same(kdev, loss, loss_ref, dtype, cross_entropy_loss_scale(x, labels, reduction))
        same(kdev, p, p_ref, dtype)
        dloss = np.linspace(0.5, 2, rows).astype(dtype) if reduction == "none" else 1.5
        valid = labels != -100
        row_scale = np.where(valid, dloss / (valid.sum() if reduction == "mean" else 1), 0)
        same(kdev, ops.softmax_cross_entropy_backward(p, kdev.asarray(labels), dloss, reduction=reduction,
                                                      device=kdev),
             ops.softmax_cross_entropy_backward(p_ref, labels, dloss, reduction=reduction, device=cpu), dtype,
             cross_entropy_grad_scale(p_ref, labels, row_scale))


@pytest.mark.parametrize("cols", [10, 1000, 5000, 20000])
def test_fused_gradient_mode(kdev, cols):
    """The forward kernel can write (p - onehot) * g directly instead of p."""
    x = logits(3, cols, np.float64)
    labels = np.array([0, -100, cols - 1])
    scale = np.array([0.5])
    loss, grad = kdev.run(SOFTMAX_CROSS_ENTROPY, kdev.asarray(x), kdev.asarray(labels), -100,
                          grad_scale=kdev.asarray(scale))
    _, p = ops.softmax_cross_entropy(x, labels, device="cpu")
    want = ops.softmax_cross_entropy_backward(p, labels, 1.0, reduction="sum", device="cpu") * 0.5
    same(kdev, grad, want, np.float64, cross_entropy_grad_scale(p, labels, np.where(labels != -100, 0.5, 0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [3, 40, 2000, 20000])
def test_extreme_and_infinite_logits(kdev, cols, dtype):
    cpu = gpunet.device("cpu")
    x = logits(3, cols, dtype, scale=1.0) * dtype(1e4)
    x[1, ::2] = -np.inf        # a row with -inf entries
    x[2, :] = -np.inf          # a row of nothing but -inf: NaN, as on the CPU
    for op in (ops.softmax, ops.log_softmax):
        got = kdev.to_numpy(op(kdev.asarray(x), device=kdev))
        want = op(x, device=cpu)
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
        assert_per_value(got, want, dtype, forward_scale(op, x))
    labels = np.array([0, 1, -100])  # row 1 label 1 is a finite logit
    loss, _ = ops.softmax_cross_entropy(kdev.asarray(x), kdev.asarray(labels), reduction="none", device=kdev)
    loss_ref, _ = ops.softmax_cross_entropy(x, labels, reduction="none", device=cpu)
    assert_per_value(kdev.to_numpy(loss), loss_ref, dtype, cross_entropy_loss_scale(x, labels, "none"))


@pytest.mark.parametrize("cols", [10, 2000])
def test_out_of_range_labels_raise_the_cpu_error(kdev, cols):
    x = kdev.asarray(logits(5, cols, np.float32))
    for bad in (cols, -1):
        labels = np.array([0, 1, bad, 2, bad])
        with pytest.raises(ValueError, match=f"label {bad} at row 2 is out of range"):
            ops.softmax_cross_entropy(x, kdev.asarray(labels), device=kdev)
        with pytest.raises(ValueError, match=f"label {bad} at row 2 is out of range"):
            ops.softmax_cross_entropy(x, labels, device="cpu")


def test_non_contiguous_and_other_axes(kdev):
    x = logits(6, 8, np.float64)
    view = x[::2, 1:]
    same(kdev, ops.softmax(kdev.asarray(view), device=kdev), ops.softmax(view, device="cpu"), np.float64)
    x3 = logits(4, 5, np.float64).reshape(2, 2, 5)
    same(kdev, ops.log_softmax(kdev.asarray(x3), axis=1, device=kdev), ops.log_softmax(x3, axis=1, device="cpu"),
         np.float64, np.moveaxis(log_softmax_scale(np.moveaxis(x3, 1, -1)), -1, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activations(kdev, name, dtype):
    forward, backward = getattr(ops, name), getattr(ops, f"{name}_backward")
    x = logits(7, 45, dtype, scale=3.0)
    dy = logits(7, 45, dtype, seed=5, scale=1.0)
    y_ref = forward(x, device="cpu")
    same(kdev, forward(kdev.asarray(x), device=kdev), y_ref, dtype)
    y, g = np.abs(y_ref.astype(np.float64)), np.abs(dy.astype(np.float64))
    terms = {"relu": g, "tanh": g * (1 + y * y), "sigmoid": g * y * (1 + y)}[name]  # dy (1 - y^2), dy y (1 - y)
    same(kdev, backward(kdev.asarray(y_ref), kdev.asarray(dy), device=kdev), backward(y_ref, dy, device="cpu"), dtype,
         terms)


def test_unsupported_dtype_is_a_clear_error(kdev):
    with pytest.raises(TypeError, match="support"):
        kdev.run(SOFTMAX, kdev.asarray(np.zeros((2, 3), dtype=np.longdouble)))


@pytest.mark.parametrize("cols", [10, 33, 1000, 5000])
def test_float16_accumulates_in_float32(kdev, cols):
    from gpunet.cuda.nvrtc import cuda_include_dirs
    if kdev.name == "sim" and not cuda_include_dirs(host_compilable=True):
        pytest.skip("float16 in the simulator needs a CUDA toolkit's cuda_fp16.h (with crt/) on this machine")
    x = logits(3, cols, np.float16, scale=2.0)
    dy = logits(3, cols, np.float16, seed=3, scale=1.0)
    # Both sides accumulate in float32 and round once to float16: per value, a float16 ulp or two.
    for forward, backward in ((ops.softmax, ops.softmax_backward), (ops.log_softmax, ops.log_softmax_backward)):
        y_ref = forward(x, device="cpu")
        y = forward(kdev.asarray(x), device=kdev)
        assert y.dtype == np.float16
        same(kdev, y, y_ref, np.float16, forward_scale(forward, x))
        same(kdev, backward(kdev.asarray(y_ref), kdev.asarray(dy), device=kdev), backward(y_ref, dy, device="cpu"),
             np.float16, backward_scale(forward, y_ref, dy))
    labels = np.array([0, 1, cols - 1])
    loss, p = ops.softmax_cross_entropy(kdev.asarray(x), kdev.asarray(labels), reduction="none", device=kdev)
    loss_ref, p_ref = ops.softmax_cross_entropy(x, labels, reduction="none", device="cpu")
    same(kdev, loss, loss_ref, np.float16, cross_entropy_loss_scale(x, labels, "none"))
    same(kdev, p, p_ref, np.float16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_with_bias_kernel(kdev, dtype):
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((9, 7), (7, 5), (5,)))
    same(kdev, ops.linear(kdev.asarray(x), kdev.asarray(w), kdev.asarray(b), device=kdev),
         ops.linear(x, w, b, device="cpu"), dtype, np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + np.abs(b))


# ---- mutation test: the parity check must catch a kernel that flushes small outputs to zero ------------------
FLUSH = """
__device__ __forceinline__ void store_flushed(scalar_t* p, long long i, acc_t v) {
    store(p, i, v < acc_t(1e-6) && v > -acc_t(1e-6) ? acc_t(0) : v);
}
"""


def flushing_softmax_source() -> str:
    """kernels/softmax.cu with every output below 1e-6 in magnitude written as 0: a planted bug."""
    from gpunet.cuda.source import read_source

    source = read_source("softmax")
    end = source.index("\n", source.rindex("#include")) + 1
    return source[:end] + FLUSH + re.sub(r"\bstore\(", "store_flushed(", source[end:])


@pytest.mark.parametrize("cols", [1000, 5000, 20000])  # the warp, shared-memory and uncached variants
def test_a_kernel_that_flushes_small_outputs_fails_parity(cols):
    from gpunet.devices.sim import SimLauncher, SimModule

    class FlushingLauncher(SimLauncher):
        def load_module(self, module, config):
            return SimModule(module, config, source=flushing_softmax_source())

    x = logits(3, cols, np.float32)
    got = SOFTMAX.run(FlushingLauncher(), x)
    want = ops.softmax(x, device="cpu")
    assert (want < 1e-6).mean() > 0.2 and np.all(got[want < 1e-6] == 0)  # the bug is there, and it matters
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=2e-6)  # the absolute tolerance this file had let it pass
    with pytest.raises(AssertionError, match="differ more than cross_device allows"):
        same(gpunet.device("sim"), got, want, np.float32)
