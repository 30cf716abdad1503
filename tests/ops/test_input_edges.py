"""Hard edges of the ops' inputs, the same on every device: NaN and inf propagate, read-only and
non-contiguous arrays work, an empty batch is an error."""
import numpy as np
import pytest

import gpunet
from gpunet import ops


def test_nan_propagates_the_same_on_every_device(dev):
    """Documented choice: NaN and inf in logits propagate (to their row), they do not raise."""
    x = np.array([[1.0, np.nan, 2.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 1.0]])
    for op in (ops.softmax, ops.log_softmax):
        y = dev.to_numpy(op(dev.asarray(x), device=dev))
        assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1])) and np.all(np.isnan(y[2]))
    loss, _ = ops.softmax_cross_entropy(dev.asarray(x), dev.asarray(np.array([0, 1, 2])), reduction="none",
                                        device=dev)
    loss = dev.to_numpy(loss)
    assert np.isnan(loss[0]) and np.isfinite(loss[1]) and np.isnan(loss[2])


def test_read_only_and_non_contiguous_inputs_work(dev):
    x = np.random.default_rng(0).standard_normal((4, 6))
    x.flags.writeable = False
    want = ops.softmax(np.ascontiguousarray(x), device="cpu")
    np.testing.assert_allclose(dev.to_numpy(ops.softmax(dev.asarray(x), device=dev)), want, rtol=1e-12)
    np.testing.assert_allclose(dev.to_numpy(ops.softmax(dev.asarray(x)[:, ::2], device=dev)),
                               ops.softmax(x[:, ::2], device="cpu"), rtol=1e-12)


def test_empty_batch_is_an_error(dev):
    with pytest.raises(ValueError, match="empty"):
        ops.softmax_cross_entropy(dev.asarray(np.zeros((0, 3))), dev.asarray(np.zeros(0, dtype=np.int64)))
    with pytest.raises(ValueError, match="empty"):
        gpunet.data.Batches(np.zeros((0, 2)), np.zeros(0), 4)
