"""ReLU, tanh, sigmoid and the linear layer: references and finite-difference checks on every device."""
import numpy as np
import pytest

from gpunet import ops
from gpunet.gradcheck import check_backward, numerical_gradient, relative_error

PAIRS = [
    (ops.relu, ops.relu_backward, lambda x: np.maximum(x, 0)),
    (ops.tanh, ops.tanh_backward, np.tanh),
    (ops.sigmoid, ops.sigmoid_backward, lambda x: 1 / (1 + np.exp(-x))),
]


@pytest.mark.parametrize("forward,backward,reference", PAIRS, ids=["relu", "tanh", "sigmoid"])
def test_forward_and_gradient(dev, rng, forward, backward, reference):
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the finite-difference step
    np.testing.assert_allclose(dev.to_numpy(forward(dev.asarray(x))), reference(x), rtol=1e-13, atol=1e-15)
    err = check_backward(lambda v: dev.to_numpy(forward(dev.asarray(v))),
                         lambda v, y, dy: dev.to_numpy(backward(dev.asarray(y), dev.asarray(dy))), x)
    assert err < 1e-6


def test_sigmoid_does_not_overflow(dev):
    y = dev.to_numpy(ops.sigmoid(dev.asarray(np.array([-1000.0, 0.0, 1000.0]))))
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])


def test_linear_gradients(rng):
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    dy = rng.standard_normal((3, 2))
    dx, dw, db = ops.linear_backward(x, w, dy)
    for analytic, wrt in ((dx, "x"), (dw, "weight"), (db, "bias")):
        args = {"x": x, "weight": w, "bias": b}

        def loss(v, wrt=wrt):
            return np.sum(dy * ops.linear(**{**args, wrt: v}))
        assert relative_error(analytic, numerical_gradient(loss, args[wrt])) < 1e-6


def test_linear_bad_shapes():
    with pytest.raises(ValueError, match="4 features"):
        ops.linear(np.zeros((2, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="bias"):
        ops.linear(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3))


def test_sigmoid_keeps_precision_in_the_negative_tail(dev):
    x = np.array([-30.0, -20.0, 20.0], dtype=np.float32)
    y = dev.to_numpy(ops.sigmoid(dev.asarray(x)))
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
