"""nn.LinearCrossEntropy: the same loss and gradients as nn.Linear followed by nn.SoftmaxCrossEntropy, value by
value; its parameters' gradients against finite differences; evaluation, logits and top-k for inference."""
import numpy as np
import pytest

from gpunet import nn
from gpunet.gradcheck import numerical_gradient, relative_error

from tests.helpers import assert_per_value

LABELS = np.array([0, 3, 1, -100, 2, 3, 3, 4, 0, 1, -100, 2, 4, 1, 0, 2, 3])


def pair(dev, dtype, rng, width=6, n_classes=41, reduction="mean"):
    """A Linear + SoftmaxCrossEntropy and a LinearCrossEntropy with the Linear's weights (its state dict) and a
    nonzero bias; blocks of 4 rows over 17."""
    linear = nn.Linear(width, n_classes, dtype=dtype, device=dev)
    linear.bias.data[...] = dev.asarray(rng.standard_normal(n_classes).astype(dtype))
    fused = nn.LinearCrossEntropy(width, n_classes, dtype=dtype, reduction=reduction, block_rows=4, device=dev)
    fused.load_state_dict(linear.state_dict())
    return linear, nn.SoftmaxCrossEntropy(reduction=reduction, device=dev), fused


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_linear_then_softmax_cross_entropy(dev, rng, reduction, dtype):
    """Loss, dL/dh and both parameters' gradients, for a scalar dloss and (reduction "none") one per row; each
    value within its dtype's rounding of the terms it sums (the materialised layers round too)."""
    linear, loss_fn, fused = pair(dev, dtype, rng, reduction=reduction)
    h = dev.asarray((rng.standard_normal((len(LABELS), 6)) * 2).astype(dtype))
    labels = dev.asarray(np.where(LABELS >= 0, LABELS * 41 // 5, LABELS))
    dloss = rng.standard_normal(len(LABELS)).astype(dtype) if reduction == "none" else 0.5
    want_loss = loss_fn.forward(linear.forward(h), labels)
    grad_z = loss_fn.backward(dev.asarray(dloss) if reduction == "none" else dloss)
    want_h = linear.backward(grad_z)
    got_loss = fused.forward(h, labels)
    got_h = fused.backward(dev.asarray(dloss) if reduction == "none" else dloss)
    # the size of the terms: |dL/dz| (at most |dloss| (p + onehot) per row) times the other factor's magnitudes
    terms = np.abs(dev.to_numpy(grad_z)).astype(np.float64) + np.abs(np.asarray(dloss, np.float64)).reshape(-1, 1) / (
        (LABELS != -100).sum() if reduction == "mean" else 1)
    weight, hh = np.abs(dev.to_numpy(linear.weight.data)), np.abs(dev.to_numpy(h))
    logits = np.abs(dev.to_numpy(linear.forward(h))).astype(np.float64)
    loss_scale = logits.max(axis=1) + np.log(41) + 1
    loss_scale = loss_scale if reduction == "none" else np.full((), loss_scale.sum())
    for got, want, scale in ((got_loss, want_loss, loss_scale), (got_h, want_h, terms @ weight.T),
                             (fused.weight.grad, linear.weight.grad, hh.T @ terms),
                             (fused.bias.grad, linear.bias.grad, terms.sum(axis=0))):
        assert dev.to_numpy(got).dtype == np.dtype(dtype)
        assert_per_value(dev.to_numpy(got), dev.to_numpy(want), np.dtype(dtype), scale=scale)


def test_parameter_gradients_against_finite_differences(dev, rng):
    """float64, with label smoothing and ignored rows: weight, bias and h against finite differences."""
    fused = nn.LinearCrossEntropy(3, 5, dtype="float64", label_smoothing=0.1, block_rows=4, device=dev)
    fused.bias.data[...] = dev.asarray(rng.standard_normal(5))
    h, labels = rng.standard_normal((9, 3)), dev.asarray(np.minimum(LABELS[:9], 4))
    fused.forward(dev.asarray(h), labels)
    grad_h = dev.to_numpy(fused.backward(1.5))

    def loss_at(v, param):
        saved = dev.to_numpy(param.data).copy()
        param.data[...] = dev.asarray(v)
        loss = 1.5 * float(fused.forward(dev.asarray(h), labels))
        param.data[...] = dev.asarray(saved)
        return loss

    for param in fused.parameters():
        analytic = dev.to_numpy(param.grad).copy()
        numeric = numerical_gradient(lambda v, p=param: loss_at(v, p), dev.to_numpy(param.data))
        assert relative_error(analytic, numeric) < 1e-7
    numeric_h = numerical_gradient(lambda v: 1.5 * float(fused.forward(dev.asarray(v), labels)), h)
    assert relative_error(grad_h, numeric_h) < 1e-7


def test_evaluation_logits_and_top_k(dev, rng):
    fused = nn.LinearCrossEntropy(4, 30, block_rows=8, device=dev)
    fused.bias.data[...] = dev.asarray(rng.standard_normal(30).astype(np.float32))
    h = dev.asarray(rng.standard_normal((21, 4)).astype(np.float32))
    labels = dev.asarray(rng.integers(0, 30, 21))
    training_loss = float(fused.forward(h, labels))
    fused.eval()
    assert float(fused.forward(h, labels)) == training_loss  # the same blocks, without the two gradient products
    with pytest.raises(RuntimeError, match="before a forward in training mode"):
        fused.backward()
    logits = dev.to_numpy(fused.logits(h))
    np.testing.assert_allclose(logits, dev.to_numpy(h) @ dev.to_numpy(fused.weight.data) + dev.to_numpy(
        fused.bias.data), rtol=1e-5, atol=1e-6)
    values, indices = (dev.to_numpy(a) for a in fused.top_k(h, k=5))
    order = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_array_equal(values, np.take_along_axis(logits, order, axis=1))
    h_nan = dev.to_numpy(h).copy()
    h_nan[2, 0] = np.nan
    assert dev.to_numpy(fused.top_k(dev.asarray(h_nan), k=30)[1]).shape == (21, 30)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 30\]"):
        fused.top_k(h, k=31)


def test_bad_input_and_repr():
    fused = nn.LinearCrossEntropy(4, 7, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 4\)"):
        fused.forward(np.ones((2, 3), dtype=np.float32), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="positive sizes"):
        nn.LinearCrossEntropy(0, 7)
    with pytest.raises(ValueError, match="dloss for reduction='mean' must be a scalar"):
        fused.forward(np.ones((2, 4), dtype=np.float32), np.zeros(2, dtype=np.int64))
        fused.backward(np.ones(2))
    assert repr(fused) == "LinearCrossEntropy(4, 7, bias=True, reduction='mean', label_smoothing=0.1)"
    assert [name for name, _ in fused.named_parameters()] == ["weight", "bias"]
