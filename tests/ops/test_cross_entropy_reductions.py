"""The cross-entropy reduction rule (docs/semantics.md): the row losses are summed in a wider type and the result
rounded once, on every form (compiled CPU, NumPy, the kernels in the simulator), and ``count`` is checked as every
other argument is."""
import warnings

import numpy as np
import pytest

from gpunet import ops




def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


@pytest.mark.parametrize("path", ["fused", "count", "two-step"])
def test_float32_mean_past_float32_range_in_the_sum(form, path):
    """Two rows of loss 3e38: their sum, 6e38, is past float32's range; the mean is not."""
    logits, labels = np.array([[3e38, 0], [3e38, 0]], np.float32), np.array([1, 1])
    if path == "two-step":
        loss = _no_warning(lambda: ops.softmax_cross_entropy(logits, labels, device=form)[0])
    else:
        count = {"count": 2} if path == "count" else {}
        loss = _no_warning(lambda: ops.softmax_cross_entropy_with_grad(logits, labels, device=form, **count)[0])
    assert np.dtype(loss.dtype) == np.float32 and float(loss) == np.float32(3e38)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_float16_reduction_rounds_once(form, reduction):
    """float16: two rows of loss 60000 (the mean fits float16; the sum, 120000, is inf: past its range)."""
    logits, labels = np.array([[60000, 0], [60000, 0]], np.float16), np.array([1, 1])
    for fn in (ops.softmax_cross_entropy, ops.softmax_cross_entropy_with_grad):
        loss = _no_warning(lambda: fn(logits, labels, reduction=reduction, device=form)[0])
        assert np.dtype(loss.dtype) == np.float16
        assert float(loss) == (60000.0 if reduction == "mean" else np.inf)


def test_row_losses_rounded_once_in_float16(form):
    """Row losses kept in float32 until the mean: rounded to float16 row by row, these four would average to
    4.855 (float16), where the mean rounded once is 4.86."""
    first = np.array([6.44, 6.465, 4.12, 2.287], np.float16)
    logits, labels = np.stack([first, np.zeros(4, np.float16)], axis=1), np.array([1, 1, 1, 1])
    rows = np.logaddexp(first.astype(np.float64), 0.0)
    twice = np.float16(rows.astype(np.float16).astype(np.float64).mean())
    assert twice != np.float16(rows.mean())  # the case does tell the two apart
    for fn in (ops.softmax_cross_entropy, ops.softmax_cross_entropy_with_grad):
        assert float(fn(logits, labels, device=form)[0]) == float(np.float16(rows.mean()))


def test_an_infinite_scale_gives_minus_inf_at_the_label(form):
    """A divisor so small that its reciprocal is inf: ``(p - 1) * inf = -inf`` at the label (p < 1), never the
    NaN of ``p * inf - inf`` (the compiled CPU kernel computed that)."""
    logits, labels = np.array([[1.0, 2.0, 3.0]], np.float32), np.array([1])
    _, grad = _no_warning(lambda: ops.softmax_cross_entropy_with_grad(logits, labels, count=1e-300, device=form))
    np.testing.assert_array_equal(grad, [[np.inf, -np.inf, np.inf]])


@pytest.mark.parametrize("count, error", [(0, ValueError), (-1, ValueError), (float("nan"), ValueError),
                                          (float("inf"), ValueError), (True, TypeError), ("4", TypeError),
                                          (np.array([4]), TypeError), (None, None)])
def test_count_is_checked(form, count, error):
    logits, labels = np.zeros((3, 4), np.float32), np.array([0, 1, 2])
    if error is None:
        ops.softmax_cross_entropy_with_grad(logits, labels, count=count, device=form)
        return
    with pytest.raises(error, match="count"):
        ops.softmax_cross_entropy_with_grad(logits, labels, count=count, device=form)


@pytest.mark.parametrize("count", [4, 4.0, np.int64(4), np.float32(4), np.array(4)])
def test_count_takes_any_real_number(form, count):
    """A global batch's count (or weight sum, a float) from any source: the same gradient ``(p - y) / 4``."""
    logits, labels = np.zeros((2, 2)), np.array([0, 1])
    _, grad = ops.softmax_cross_entropy_with_grad(logits, labels, count=count, device=form)
    np.testing.assert_array_equal(grad, [[-0.125, 0.125], [0.125, -0.125]])
