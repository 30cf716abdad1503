"""The written semantics (docs/semantics.md) for NaN, inf, integer kinds and extreme labels, asserted on every
device: where the devices disagreed, this is what they now agree on (PyTorch's answer where it has one)."""
import warnings

import numpy as np
import pytest

from gpunet import ops

NAN, INF = np.nan, np.inf


def run(dev, fn, *arrays, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = fn(*(dev.asarray(a) for a in arrays), device=dev, **kwargs)
    return [dev.to_numpy(o) for o in out] if isinstance(out, tuple) else dev.to_numpy(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_relu_keeps_nan_and_its_backward_selects(dev, dtype):
    """relu(NaN) = NaN (it was 0 in the CUDA kernel, so a NaN input gave a finite loss on a GPU). The backward
    gives exactly 0 where y <= 0, an inf or NaN dy there included, and passes dy where y > 0 or y is NaN."""
    x = np.array([NAN, INF, -INF, -0.0, 0.0, -2.0, 3.0], dtype)
    np.testing.assert_array_equal(run(dev, ops.relu, x), np.array([NAN, INF, 0, 0, 0, 0, 3], dtype))
    y = np.array([NAN, 0.0, 0.0, -1.0, 2.0, INF, 1.0], dtype)
    dy = np.array([5.0, INF, NAN, -INF, NAN, 7.0, -INF], dtype)
    np.testing.assert_array_equal(run(dev, ops.relu_backward, y, dy), np.array([5, 0, 0, 0, NAN, 7, -INF], dtype))


def test_a_nan_feature_gives_a_nan_loss_on_every_device(dev):
    """The divergence guard watches the loss: a NaN input must reach it through a ReLU net on every device."""
    from gpunet import nn

    model = nn.mlp([3, 4, 2], "relu", device=dev)
    x = np.array([[NAN, 0.5, -0.5]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss, _ = ops.softmax_cross_entropy_with_grad(model.forward(dev.asarray(x)), dev.asarray(np.array([1])),
                                                      device=dev)
    assert np.isnan(float(dev.to_numpy(loss)))


@pytest.mark.parametrize("fn", [ops.softmax_cross_entropy, ops.softmax_cross_entropy_with_grad],
                         ids=["loss_and_probs", "loss_and_grad"])
@pytest.mark.parametrize("labels,error,message", [
    (np.array([1, 2**64 - 100, 0], np.uint64), ValueError, "label 18446744073709551516 at row 1 is out of range"),
    (np.array([1, 4, 0], np.int32), ValueError, "label 4 at row 1 is out of range"),
    (np.array([1, -1, 0], np.int8), ValueError, "label -1 at row 1 is out of range"),
    (np.array([1, 2, 0], np.float32), ValueError, "labels must be an integer array"),
], ids=["uint64-past-int64", "past-C", "negative-int8", "float"])
def test_bad_labels_raise_the_same_error_on_every_device(dev, fn, labels, error, message):
    """A uint64 label past int64's range was an error on cpu, an ignored row on cpu's fused path, and an ignored
    row still counted in the mean on sim. Labels of every integer kind are now read as int64, after the check."""
    with pytest.raises(error, match=message):
        run(dev, fn, np.zeros((3, 4), np.float32), labels)


@pytest.mark.parametrize("ignore_index,error", [(2**70, ValueError), (-(2**63) - 1, ValueError), (True, TypeError),
                                                (1.5, TypeError)])
def test_ignore_index_must_fit_int64(dev, ignore_index, error):
    """2**70 wrapped to 0 through ctypes on cpu (every label-0 row ignored) and was an OverflowError on sim."""
    for fn in (ops.softmax_cross_entropy, ops.softmax_cross_entropy_with_grad):
        with pytest.raises(error, match="ignore_index"):
            run(dev, fn, np.zeros((3, 4), np.float32), np.array([0, 1, 2]), ignore_index=ignore_index)


@pytest.mark.parametrize("kind", [np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64])
def test_every_integer_kind_gives_the_int64_answer(dev, kind):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 3, 1, 4])
    want = run(dev, ops.softmax_cross_entropy_with_grad, logits, labels, ignore_index=3)
    got = run(dev, ops.softmax_cross_entropy_with_grad, logits, labels.astype(kind), ignore_index=3)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_softmax_rows_with_nan_and_inf(dev):
    """A -inf entry weighs 0; a row of nothing but -inf, or with NaN or +inf, has no distribution: NaN."""
    x = np.array([[0.0, -INF, 0.0], [-INF, -INF, -INF], [0.0, NAN, 1.0], [0.0, INF, 1.0]], np.float32)
    y = run(dev, ops.softmax, x)
    np.testing.assert_array_equal(y[0], [0.5, 0.0, 0.5])
    assert np.isnan(y[1:]).all()
