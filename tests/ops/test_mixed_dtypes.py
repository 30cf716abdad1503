"""Mixed float dtypes: the inputs of an op are promoted to their common dtype (NumPy's rule) before any device
runs it, so every device gives the answer of the op on the promoted inputs."""
import warnings

import numpy as np
import pytest

from gpunet import ops
from tests.helpers import tolerance

BACKWARDS = [ops.softmax_backward, ops.log_softmax_backward, ops.relu_backward, ops.tanh_backward,
             ops.sigmoid_backward, ops.gelu_backward]


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("first,second", [(np.float64, np.float32), (np.float32, np.float64),
                                          (np.float16, np.float32), (np.float32, np.float16)])
def test_a_backward_of_two_dtypes_is_the_backward_of_the_promoted_pair(dev, backward, first, second):
    rng = np.random.default_rng(7)
    y = ops.softmax(rng.standard_normal((5, 33)), device="cpu").astype(first)
    dy = rng.standard_normal((5, 33)).astype(second)
    common = np.result_type(first, second)
    got = dev.to_numpy(backward(dev.asarray(y), dev.asarray(dy)))
    want = dev.to_numpy(backward(dev.asarray(y.astype(common)), dev.asarray(dy.astype(common))))
    assert got.dtype == common
    np.testing.assert_array_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        on_cpu = backward(y.astype(common), dy.astype(common), device="cpu")
    rtol, atol = tolerance("cross_device", common)
    np.testing.assert_allclose(got, on_cpu, rtol=rtol, atol=atol)


def test_an_optimizer_uses_a_gradient_of_another_dtype_in_the_parameters_dtype(dev):
    """A float64 gradient on a float32 parameter: the compiled CPU update fell back to NumPy, sim raised. Now the
    gradient is used in the parameter's dtype on every device."""
    from gpunet import nn, optim

    results = []
    for grad_dtype in (np.float64, np.float32):
        layer = nn.Linear(5, 3, device=dev, rng=0)
        opt = optim.Adam(layer.parameters(), lr=0.1)
        for p in layer.parameters():
            p.grad = dev.asarray(np.linspace(-1, 1, p.data.size).reshape(p.shape).astype(grad_dtype))
        opt.step()
        results.append([dev.to_numpy(p.data) for p in layer.parameters()])
        assert all(p.data.dtype == np.float32 for p in layer.parameters())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_a_zero_dimensional_input_keeps_its_shape(dev):
    for op in (ops.relu, ops.tanh, ops.gelu):
        assert dev.to_numpy(op(dev.asarray(np.array(1.5)))).shape == ()
