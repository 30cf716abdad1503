"""Fused softmax cross-entropy: loss against a float64 reference, gradient (p - y)/N against finite differences."""
import numpy as np
import pytest

from gpunet import ops
from gpunet.gradcheck import numerical_gradient, relative_error
from tests.ops.reference import cross_entropy_rows_ref, softmax_ref


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_and_probs_match_reference(dev, rng, reduction):
    logits = rng.standard_normal((6, 4)) * 2
    labels = np.array([0, 3, 1, -100, 2, 3])
    loss, probs = ops.softmax_cross_entropy(dev.asarray(logits), dev.asarray(labels), reduction=reduction)
    rows = cross_entropy_rows_ref(logits, labels)
    want = {"mean": rows.sum() / 5, "sum": rows.sum(), "none": rows}[reduction]
    np.testing.assert_allclose(dev.to_numpy(loss), want, rtol=1e-12)
    np.testing.assert_allclose(dev.to_numpy(probs), softmax_ref(logits), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_check(dev, rng, reduction):
    logits = rng.standard_normal((5, 4))
    labels = np.array([1, -100, 0, 3, 3])
    weights = rng.standard_normal(5) if reduction == "none" else 1.7

    def loss_of(x):
        loss, _ = ops.softmax_cross_entropy(dev.asarray(x), dev.asarray(labels), reduction=reduction)
        return np.sum(weights * dev.to_numpy(loss))

    _, probs = ops.softmax_cross_entropy(dev.asarray(logits), dev.asarray(labels), reduction=reduction)
    grad = ops.softmax_cross_entropy_backward(probs, dev.asarray(labels), dev.asarray(weights), reduction=reduction)
    err = relative_error(dev.to_numpy(grad), numerical_gradient(loss_of, logits))
    assert err < 1e-6
    assert np.all(dev.to_numpy(grad)[1] == 0)  # the ignored row


def test_gradient_is_p_minus_onehot_over_n(dev, rng):
    logits = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 1])
    _, probs = ops.softmax_cross_entropy(dev.asarray(logits), dev.asarray(labels))
    grad = dev.to_numpy(ops.softmax_cross_entropy_backward(probs, dev.asarray(labels)))
    np.testing.assert_allclose(grad, (softmax_ref(logits) - np.eye(3)[labels]) / 4, rtol=1e-12, atol=1e-15)


def test_huge_logits_give_finite_loss(dev):
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    loss, _ = ops.softmax_cross_entropy(dev.asarray(logits), dev.asarray(np.array([2, 0])), reduction="none")
    np.testing.assert_allclose(dev.to_numpy(loss), [2e4, 1e4 + np.log(2)], rtol=1e-12)


def test_all_rows_ignored(dev):
    logits = np.zeros((2, 3))
    labels = np.array([-100, -100])
    loss, probs = ops.softmax_cross_entropy(dev.asarray(logits), dev.asarray(labels))
    assert np.isnan(float(dev.to_numpy(loss)))  # mean over no rows, as in PyTorch
    assert np.all(dev.to_numpy(ops.softmax_cross_entropy_backward(probs, dev.asarray(labels))) == 0)


def test_binary_cross_entropy_on_softmax_output_fails_the_gradient_check(rng):
    """A common seed mistake: using the BCE gradient (p - y) / (p (1 - p)) through a softmax."""
    logits = rng.standard_normal((3, 4))
    labels = np.array([0, 2, 1])

    def loss_of(x):
        return float(ops.softmax_cross_entropy(x, labels)[0])

    p = softmax_ref(logits)
    y = np.eye(4)[labels]
    dp = (p - y) / (p * (1 - p)) / 3
    wrong = ops.softmax_backward(p, dp)
    assert relative_error(wrong, numerical_gradient(loss_of, logits)) > 0.1


@pytest.mark.parametrize("bad,match", [(3, "label 3 at row 1"), (-1, "label -1 at row 1")])
def test_label_out_of_range(dev, bad, match):
    with pytest.raises(ValueError, match=match):
        ops.softmax_cross_entropy(dev.asarray(np.zeros((2, 3))), dev.asarray(np.array([0, bad])))


def test_bad_shapes_and_dtypes(dev):
    x = dev.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ops.softmax_cross_entropy(x, dev.asarray(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="integer"):
        ops.softmax_cross_entropy(x, dev.asarray(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="floating-point"):
        ops.softmax_cross_entropy(dev.asarray(np.zeros((2, 3), dtype=np.int32)), dev.asarray(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"shape \(\) to match logits of shape \(3,\)"):  # unbatched: a 0-d label
        ops.softmax_cross_entropy(dev.asarray(np.zeros(3)), dev.asarray(np.array([0])))
    with pytest.raises(ValueError, match="reduction"):
        ops.softmax_cross_entropy(x, dev.asarray(np.array([0, 1])), reduction="avg")


def test_loss_is_exact_when_the_label_is_the_max(dev):
    """Found by the property tests: (log s + m) - x loses digits at |m| ~ 4e6; (m - x) + log s does not."""
    logits = np.array([[0.0, 4194303.0, 4194303.0, 4194303.0]])
    loss, _ = ops.softmax_cross_entropy(dev.asarray(logits), dev.asarray(np.array([1])), reduction="none")
    assert dev.to_numpy(loss)[0] == pytest.approx(np.log(3), rel=1e-15)
