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
