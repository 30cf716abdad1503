"""The one-pass loss and gradient (what the training layer uses): same numbers as forward then backward, the
gradient against finite differences, and the label check it may skip."""
import numpy as np
import pytest

import gpunet
from gpunet import nn, ops
from gpunet.gradcheck import numerical_gradient, relative_error
from gpunet.training import require_labels_in_range

from tests.helpers import TOLERANCES

TOL = TOLERANCES["numpy_form"]

LABELS = np.array([0, 3, 1, -100, 2, 3, 3])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("cols", [4, 33, 1500])
def test_matches_forward_then_backward(dev, rng, reduction, dtype, cols):
    logits = (rng.standard_normal((len(LABELS), cols)) * 3).astype(dtype)
    labels = np.where(LABELS >= 0, LABELS * cols // 4, LABELS)
    x, y = dev.asarray(logits), dev.asarray(labels)
    loss, grad = ops.softmax_cross_entropy_with_grad(x, y, reduction=reduction)
    loss_ref, probs = ops.softmax_cross_entropy(logits.astype(np.float64), labels, reduction=reduction, device="cpu")
    grad_ref = ops.softmax_cross_entropy_backward(probs, labels, reduction=reduction, device="cpu")
    rtol, atol = TOL[dtype]
    assert grad.dtype == dtype and grad.shape == logits.shape
    np.testing.assert_allclose(dev.to_numpy(loss).astype(np.float64), loss_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(dev.to_numpy(grad).astype(np.float64), grad_ref, rtol=rtol, atol=atol)
    assert np.all(dev.to_numpy(grad)[3] == 0)  # the ignored row


@pytest.mark.parametrize("cols", [96, 260, 1000])  # the warp kernels with 4, 16 and 32 values a lane
def test_the_label_logit_from_every_column(dev, rng, cols):
    """The warp kernels take x[label] from the registers of the lane that loaded it: a row per column, each
    labelled with its own column, so every (lane, register) position is the label once."""
    rows = cols
    logits = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    labels = np.arange(rows)
    loss, grad = ops.softmax_cross_entropy_with_grad(dev.asarray(logits), dev.asarray(labels), reduction="none")
    loss_ref, probs = ops.softmax_cross_entropy(logits.astype(np.float64), labels, reduction="none", device="cpu")
    rtol, atol = TOL[np.float32]
    np.testing.assert_allclose(dev.to_numpy(loss), loss_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(dev.to_numpy(grad), probs - np.eye(cols), rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_check(dev, rng, reduction):
    logits = rng.standard_normal((len(LABELS), 5))
    labels = np.minimum(LABELS, 4)
    weights = rng.standard_normal(len(LABELS)) if reduction == "none" else 0.7

    def loss_of(x):
        loss, _ = ops.softmax_cross_entropy_with_grad(dev.asarray(x), dev.asarray(labels), reduction=reduction)
        return np.sum(weights * dev.to_numpy(loss))

    _, grad = ops.softmax_cross_entropy_with_grad(dev.asarray(logits), dev.asarray(labels), reduction=reduction)
    grad = ops.scale_grad(grad, dev.asarray(np.asarray(weights)), reduction)
    assert relative_error(dev.to_numpy(grad), numerical_gradient(loss_of, logits)) < 1e-6


def test_layer_backward_scales_by_dloss(dev, rng):
    logits, labels = rng.standard_normal((4, 3)), np.array([2, 0, 1, 1])
    layer = nn.SoftmaxCrossEntropy(reduction="none", device=dev)
    layer.forward(dev.asarray(logits), dev.asarray(labels))
    dloss = np.array([1.0, 2.0, 0.0, -1.0])
    got = dev.to_numpy(layer.backward(dev.asarray(dloss)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(got, (probs - np.eye(3)[labels]) * dloss[:, None], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        layer.backward(dev.asarray(np.ones(3)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.SoftmaxCrossEntropy(device=dev).backward()


def test_label_check_and_its_opt_out(dev):
    logits, labels = dev.asarray(np.zeros((3, 4))), dev.asarray(np.array([1, 4, 0]))
    with pytest.raises(ValueError, match="label 4 at row 1"):
        ops.softmax_cross_entropy_with_grad(logits, labels)
    if dev.name == "cpu":
        return  # the CPU always checks: it costs no sync there
    loss, _ = ops.softmax_cross_entropy_with_grad(logits, labels, reduction="none", check_labels=False)
    loss = dev.to_numpy(loss)
    assert np.isnan(loss[1]) and np.isfinite(loss[[0, 2]]).all()  # unchecked: the bad row alone is NaN


def test_dataset_labels_are_checked_once_before_training():
    require_labels_in_range(np.array([0, 9, 3]), 10, "training")
    with pytest.raises(ValueError, match="training label 10 of sample 2 is out of range"):
        require_labels_in_range(np.array([0, 9, 10]), 10, "training")
    with pytest.raises(ValueError, match="test label -1 of sample 0"):
        require_labels_in_range(np.array([-1]), 10, "test")


def test_a_gpu_refuses_long_double_by_name():
    from gpunet.devices.cuda import CudaDevice, UnsupportedDtype
    fake = object.__new__(CudaDevice)  # no GPU needed: the check runs before CuPy is touched
    fake.name = "cuda:0"
    for exc in (UnsupportedDtype, TypeError, ValueError):
        with pytest.raises(exc, match="cuda:0 cannot hold an array of dtype float128"):
            fake.asarray(np.zeros(2, dtype=np.longdouble))
    with pytest.raises(UnsupportedDtype, match="dtype object"):
        fake.asarray(np.array([None]), dtype=object)
    assert gpunet.device("cpu").asarray(np.zeros(1)).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_every_row_ignored(dev, dtype):
    logits, labels = dev.asarray(np.ones((3, 5), dtype=dtype)), dev.asarray(np.full(3, -100))
    loss, grad = ops.softmax_cross_entropy_with_grad(logits, labels)
    assert np.isnan(float(dev.to_numpy(loss))) and dev.to_numpy(loss).dtype == dtype  # mean over no rows
    assert np.all(dev.to_numpy(grad) == 0)
    loss, _ = ops.softmax_cross_entropy_with_grad(logits, labels, reduction="sum")
    assert float(dev.to_numpy(loss)) == 0
