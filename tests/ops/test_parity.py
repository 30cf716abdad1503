"""Parity across devices: every custom kernel against the NumPy path, forward and backward, over every dispatch
branch (warp with sub-warp groups, shared-memory block, uncached block) and the edges of each.

Reference: the "cpu" device (NumPy). Compared: "sim" (the CUDA source on the CPU simulator) always, "cuda" where
a GPU is present. Tolerances per dtype: TOLERANCES["cross_device"] in tests/helpers.py.
"""
import numpy as np
import pytest

import gpunet
from gpunet import ops
from gpunet.ops.cross_entropy import SOFTMAX_CROSS_ENTROPY
from gpunet.ops.softmax import SOFTMAX

from tests.helpers import KERNEL_DEVICES, TOLERANCES

TOL = {dtype: tol._asdict() for dtype, tol in TOLERANCES["cross_device"].items()}  # rtol=, atol=
# C = 1..1024: warp variant (sub-warp groups up to 32, then 2..32 values per lane); 1025..6144 (float32: 12288):
# shared memory; 20000 float32 = 80 KB > 48 KB of shared memory: the uncached variant.
WIDTHS = [1, 2, 10, 31, 32, 33, 1000, 1024, 1025, 5000, 20000]
ROWS = [1, 3]


@pytest.fixture(params=KERNEL_DEVICES)
def kdev(request):
    return gpunet.device(request.param)


def logits(rows, cols, dtype, seed=0, scale=4.0):
    return (np.random.default_rng(seed + rows * 7919 + cols).standard_normal((rows, cols)) * scale).astype(dtype)


def same(dev, got, want, dtype):
    np.testing.assert_allclose(dev.to_numpy(got), want, **TOL[dtype])


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
        same(kdev, y, y_ref, dtype)
        same(kdev, backward(kdev.asarray(y_ref), kdev.asarray(dy), device=kdev), backward(y_ref, dy, device=cpu),
             dtype)


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
        same(kdev, loss, loss_ref, dtype)
        same(kdev, p, p_ref, dtype)
        dloss = np.linspace(0.5, 2, rows).astype(dtype) if reduction == "none" else 1.5
        same(kdev, ops.softmax_cross_entropy_backward(p, kdev.asarray(labels), dloss, reduction=reduction,
                                                      device=kdev),
             ops.softmax_cross_entropy_backward(p_ref, labels, dloss, reduction=reduction, device=cpu), dtype)


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
    same(kdev, grad, want, np.float64)


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
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], **TOL[dtype])
    labels = np.array([0, 1, -100])  # row 1 label 1 is a finite logit
    loss, _ = ops.softmax_cross_entropy(kdev.asarray(x), kdev.asarray(labels), reduction="none", device=kdev)
    loss_ref, _ = ops.softmax_cross_entropy(x, labels, reduction="none", device=cpu)
    np.testing.assert_allclose(kdev.to_numpy(loss), loss_ref, **TOL[dtype])


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
         np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activations(kdev, name, dtype):
    forward, backward = getattr(ops, name), getattr(ops, f"{name}_backward")
    x = logits(7, 45, dtype, scale=3.0)
    dy = logits(7, 45, dtype, seed=5, scale=1.0)
    y_ref = forward(x, device="cpu")
    same(kdev, forward(kdev.asarray(x), device=kdev), y_ref, dtype)
    same(kdev, backward(kdev.asarray(y_ref), kdev.asarray(dy), device=kdev), backward(y_ref, dy, device="cpu"), dtype)


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
    tol = TOL[np.float16]  # both sides accumulate in float32 and round once to float16
    for forward, backward in ((ops.softmax, ops.softmax_backward), (ops.log_softmax, ops.log_softmax_backward)):
        y_ref = forward(x, device="cpu")
        y = forward(kdev.asarray(x), device=kdev)
        assert y.dtype == np.float16
        np.testing.assert_allclose(kdev.to_numpy(y).astype(np.float32), y_ref.astype(np.float32), **tol)
        np.testing.assert_allclose(
            kdev.to_numpy(backward(kdev.asarray(y_ref), kdev.asarray(dy), device=kdev)).astype(np.float32),
            backward(y_ref, dy, device="cpu").astype(np.float32), **tol)
    labels = np.array([0, 1, cols - 1])
    loss, p = ops.softmax_cross_entropy(kdev.asarray(x), kdev.asarray(labels), reduction="none", device=kdev)
    loss_ref, p_ref = ops.softmax_cross_entropy(x, labels, reduction="none", device="cpu")
    np.testing.assert_allclose(kdev.to_numpy(loss).astype(np.float32), loss_ref.astype(np.float32), **tol)
    np.testing.assert_allclose(kdev.to_numpy(p).astype(np.float32), p_ref.astype(np.float32), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_with_bias_kernel(kdev, dtype):
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((9, 7), (7, 5), (5,)))
    same(kdev, ops.linear(kdev.asarray(x), kdev.asarray(w), kdev.asarray(b), device=kdev),
         ops.linear(x, w, b, device="cpu"), dtype)
